// Command demo runs the whole pipeline on one machine with no hardware and
// no cloud account (`make demo`): simulated sensors -> bin/edge-agent ->
// an embedded MQTT broker (mochi-mqtt) -> bin/cloud-forwarder -> an
// embedded Kafka-protocol server (kfake) and, when a PostgreSQL server is
// installed, `cloud-forwarder sink` into a throwaway cluster. It prints
// each reading as it lands in Kafka and, on Ctrl-C (or after -duration),
// stops everything and prints a summary by (device_id, seq): produced,
// delivered, duplicates, still buffered, missing, rows in PostgreSQL. It
// exits 1 if a reading went missing.
//
//	go run ./scripts/demo -bin bin               # after make build
//	go run ./scripts/demo -bin bin -duration 20s -quiet
//
// Production runs the same binaries against HiveMQ Cloud and Confluent
// Cloud; only the configuration differs.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
	}
	os.Exit(cmdline.ExitCode(err))
}

// Options are the demo's settings.
type Options struct {
	BinDir   string        // holds edge-agent and cloud-forwarder
	Sensors  int           // simulated sensors
	Interval time.Duration // per sensor
	Duration time.Duration // 0: until the context ends (Ctrl-C)
	Quiet    bool          // no line per reading
	Topic    string        // Kafka topic
	DeviceID string
	NoDB     bool // skip the PostgreSQL step even when a server is installed
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.StringVar(&o.BinDir, "bin", "bin", "directory with edge-agent and cloud-forwarder (make build)")
	fs.IntVar(&o.Sensors, "sensors", 4, "number of simulated sensors")
	fs.DurationVar(&o.Interval, "interval", time.Second, "reading interval of each sensor")
	fs.DurationVar(&o.Duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	fs.BoolVar(&o.Quiet, "quiet", false, "print only the summary")
	fs.StringVar(&o.Topic, "topic", "sensor-readings", "Kafka topic")
	fs.StringVar(&o.DeviceID, "device", "demo-pi", "device_id of the simulated Pi")
	fs.BoolVar(&o.NoDB, "no-db", false, "skip the PostgreSQL step (cloud-forwarder sink) even when a server is installed")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", cmdline.ErrUsage, err)
	}
	if o.Sensors < 1 || o.Interval < 10*time.Millisecond {
		return fmt.Errorf("%w: need -sensors >= 1 and -interval >= 10ms", cmdline.ErrUsage)
	}
	sum, err := Demo(ctx, o, stdout)
	if sum != nil {
		sum.Print(stdout)
	}
	if err != nil {
		return err
	}
	if sum.Missing > 0 {
		return fmt.Errorf("%d readings are missing", sum.Missing)
	}
	if sum.DBMissing > 0 {
		return fmt.Errorf("%d readings in Kafka are not in PostgreSQL", sum.DBMissing)
	}
	return nil
}
