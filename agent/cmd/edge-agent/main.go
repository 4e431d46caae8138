// Command edge-agent polls sensors on a Raspberry Pi, keeps every reading in
// a durable buffer and publishes it to MQTT. See `edge-agent help`.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/agent/bufcmd"
	"github.com/edgepipe/sensorpipe/agent/cli"
	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/agent/sensorscmd"
	"github.com/edgepipe/sensorpipe/agent/update"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

// version is set at link time: -ldflags "-X main.version=$(git describe)".
var version = "dev"

// runMemoryLimit is the daemon's soft memory limit when GOMEMLIMIT is not
// set. The live heap while a backlog drains is 3-7 MB (the in-flight
// window's packets, the unconfirmed ledger, a peek, a bbolt commit); with
// only GOGC=100 the heap goal doubles that and the anonymous RSS peaked at
// 17-20 MiB building and draining 100,000 readings (docs/PERFORMANCE.md).
// The limit counts the runtime's own memory too: at 14 MiB the peak was
// 11 MiB for about 5 % of the CPU in GC. Past it the GC works harder, never
// beyond half the CPU, so a bigger live heap (a larger max_unconfirmed)
// slows the agent instead of failing it.
const runMemoryLimit = 14 << 20

// run is the daemon with its soft memory limit; the one-shot commands keep
// the runtime's default (buffer export streams a whole buffer).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(runMemoryLimit)
	}
	return daemon.Command(version)(ctx, args, stdout, stderr)
}

func main() {
	// HELP and TYPE lines on the status endpoint's /metrics. The metrics
	// library has only this process-wide switch; the agent keeps its series
	// in a set of its own (status.Metrics).
	metrics.ExposeMetadata(true)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := cli.App{
		Version: version,
		Commands: map[string]cli.Command{
			"sensors": sensorscmd.Run,
			"buffer":  bufcmd.Run,
			"run":     run,
			"update":  update.Command,
		},
	}
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "edge-agent: %v\n", err)
	}
	os.Exit(cmdline.ExitCode(err))
}
