package mqttpub_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// BenchmarkDrain100k drains a 100,000-reading backlog from the real bbolt
// buffer to a local mosquitto at QoS 1 (delete after PUBACK) and reports
// readings/s. Run it with -benchtime=1x under flock /tmp/bench.lock.
func BenchmarkDrain100k(b *testing.B) {
	mq := broker.StartMosquitto(b, broker.MosquittoConfig{})
	for b.Loop() {
		b.StopTimer()
		buf := openBuffer(b)
		appendN(b, buf, 100_000)
		p, err := mqttpub.New(buf, mqttpub.Options{URL: mq.URL(), DeviceID: device, ClientID: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- p.Run(ctx) }()
		for {
			st, err := buf.Stats()
			if err != nil {
				b.Fatal(err)
			}
			if st.Count == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		el := time.Since(start)
		b.StopTimer()
		cancel()
		<-done
		b.ReportMetric(100_000/el.Seconds(), "readings/s")
		buf.Close()
		b.StartTimer()
	}
}
