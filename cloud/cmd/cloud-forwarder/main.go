// Command cloud-forwarder moves sensor readings from an MQTT broker
// (HiveMQ) to Kafka (Confluent) at least once, and tails the Kafka topic for
// checks. Configuration comes from the environment; see `cloud-forwarder help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/cloud/fleet"
	"github.com/edgepipe/sensorpipe/cloud/forwarder"
	"github.com/edgepipe/sensorpipe/cloud/sink"
	"github.com/edgepipe/sensorpipe/cloud/tail"
)

// version is set at link time: -ldflags "-X main.version=$(git describe)".
var version = "dev"

// sinkMemoryLimit is the sink's soft memory limit when GOMEMLIMIT is not set.
const sinkMemoryLimit = 24 << 20

// runMemoryLimit is the forwarder's soft memory limit when GOMEMLIMIT is
// not set (the container image leaves it unset, so the binary and the image
// behave alike). The live heap is ~4 MiB plus ~1 KiB per message in flight
// (FORWARDER_MAX_IN_FLIGHT, 3,500: ~8 MiB); the limit keeps the heap goal
// from doubling a burst's live heap, so peak RSS stays under 32 MiB at every
// distance without slowing the drain (docs/FORWARDER.md, "Memory").
const runMemoryLimit = 20 << 20

func main() {
	// HELP and TYPE lines on every command's /metrics. The metrics library
	// has only this process-wide switch; each command keeps its series in a
	// set of its own (metricset.Metrics).
	metrics.ExposeMetadata(true)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "cloud-forwarder: %v\n", err)
	}
	os.Exit(cmdline.ExitCode(err))
}

func usage() string {
	var b strings.Builder
	b.WriteString(`cloud-forwarder moves sensor readings from MQTT (HiveMQ) to Kafka (Confluent), at least once.

Usage:
  cloud-forwarder run [--config FILE]     forward until SIGTERM (configuration from the environment)
  cloud-forwarder tail [--group ID] [--from-beginning] [--json] [--count N] [--topic T] [--config FILE]
                                          print the readings arriving on the Kafka topic
  cloud-forwarder sink [--config FILE]    write the readings from Kafka into PostgreSQL until SIGTERM
  cloud-forwarder broker-auth --logins FILE [--mosquitto FILE] [--hivemq FILE] [--table]
                                          write the broker's permissions (mosquitto, HiveMQ) from the one table
  cloud-forwarder fleet config push|show, fleet cmd, fleet keygen
                                          the operator's tool: remote config and commands (fleet help)
  cloud-forwarder version                 print the version

Environment (a --config YAML file may set the same keys in lower case; the environment wins):
`)
	for _, v := range config.Vars {
		def := v.Default
		if def != "" {
			def = " (default " + def + ")"
		}
		fmt.Fprintf(&b, "  %-32s %s%s\n", v.Name, v.Meaning, def)
	}
	b.WriteString("\nThe sink reads the CONFLUENT_*/KAFKA_* settings above, FORWARDER_INSECURE, FORWARDER_LOG_LEVEL, FORWARDER_PPROF, and:\n")
	for _, v := range config.SinkVars {
		def := v.Default
		if def != "" {
			def = " (default " + def + ")"
		}
		fmt.Fprintf(&b, "  %-32s %s%s\n", v.Name, v.Meaning, def)
	}
	b.WriteString("\nExit status: 0 ok, 1 runtime failure, 2 usage or configuration error.\n")
	return b.String()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return fmt.Errorf("%w: no command given", cmdline.ErrUsage)
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage())
		return nil
	case "version", "--version":
		fmt.Fprintf(stdout, "cloud-forwarder %s\n", version)
		return nil
	case "run":
		return runForwarder(ctx, args[1:], stderr)
	case "sink":
		return runSink(ctx, args[1:], stderr)
	case "tail":
		return tail.Run(ctx, args[1:], os.Getenv, stdout, stderr)
	case "broker-auth":
		return brokerauth.Run(args[1:], stdout, stderr)
	case "fleet":
		return fleet.Run(ctx, args[1:], os.Getenv, stdout, stderr)
	}
	fmt.Fprint(stderr, usage())
	return fmt.Errorf("%w: unknown command %q", cmdline.ErrUsage, args[0])
}

func runForwarder(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "optional YAML file with the same keys as the environment, in lower case")
	if err := cmdline.ParseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, os.Getenv)
	if err != nil {
		return err
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(runMemoryLimit)
	}
	log := newLogger(stderr, cfg.LogLevel)
	f, err := forwarder.New(cfg, forwarder.Options{Logger: log, Version: version})
	if err != nil {
		return err
	}
	if err := f.Run(ctx); err != nil {
		log.Error("forwarder stopped with an error", "err", err)
		return err
	}
	return nil
}

func runSink(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "optional YAML file with the same keys as the environment, in lower case")
	if err := cmdline.ParseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := config.LoadSink(*cfgPath, os.Getenv)
	if err != nil {
		return err
	}
	// A soft limit, so a burst at start (group join, first fetches, first
	// batch) does not set a heap goal twice the sink's ~10 MB live heap.
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(sinkMemoryLimit)
	}
	log := newLogger(stderr, cfg.LogLevel)
	s, err := sink.New(cfg, sink.Options{Logger: log, Version: version})
	if err != nil {
		return err
	}
	if err := s.Run(ctx); err != nil {
		log.Error("sink stopped with an error", "err", err)
		return err
	}
	return nil
}

// newLogger is the programs' logger (text on a terminal, JSON otherwise) at
// FORWARDER_LOG_LEVEL, which config.Load has checked.
func newLogger(w io.Writer, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	return cmdline.NewLogger(w, "auto", lv)
}
