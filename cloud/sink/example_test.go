package sink_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"

	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/cloud/sink"
)

// Run a sink from the environment until Ctrl-C, as `cloud-forwarder sink` does.
func Example() {
	cfg, err := config.LoadSink("", os.Getenv) // DATABASE_URL, CONFLUENT_*, KAFKA_*, SINK_*
	if err != nil {
		slog.Error("configuration", "err", err) // names the variable; exit 2
		return
	}
	s, err := sink.New(cfg, sink.Options{Logger: slog.Default()})
	if err != nil {
		slog.Error("sink", "err", err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := s.Run(ctx); err != nil {
		slog.Error("sink stopped", "err", err)
	}
}
