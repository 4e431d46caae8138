// Command edge-agent polls sensors on a Raspberry Pi, keeps every reading in
// a durable buffer and publishes it to MQTT. See `edge-agent help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/agent/bufcmd"
	"github.com/edgepipe/sensorpipe/agent/cli"
	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/agent/sensorscmd"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

// version is set at link time: -ldflags "-X main.version=$(git describe)".
var version = "dev"

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
			"run":     daemon.Run,
		},
	}
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "edge-agent: %v\n", err)
	}
	os.Exit(cmdline.ExitCode(err))
}
