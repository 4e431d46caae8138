package mqttpub_test

import (
	"context"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/buffer"
)

// The publisher drains the agent's buffer to the broker until its context
// ends; the pollers fill the buffer meanwhile. It needs a broker, so this
// example is compiled but not run.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	buf, err := buffer.Open("/var/lib/edge-agent/buffer.db", buffer.Options{Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Close()

	p, err := mqttpub.New(buf, mqttpub.Options{
		URL:      "ssl://YOUR-CLUSTER.hivemq.cloud:8883",
		DeviceID: "pi-greenhouse-1", // also the client id of its persistent session
		Username: "pi-greenhouse-1",
		Logger:   logger,
	})
	if err != nil {
		log.Fatal(err) // bad options: nothing was connected
	}
	if err := p.Run(ctx); err != nil { // reconnects by itself; returns when ctx ends
		log.Print(err)
	}
}
