package metricset_test

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/buffer/metricset"
)

func Example() {
	metrics.ExposeMetadata(true) // in main: HELP and TYPE lines
	defer metrics.ExposeMetadata(false)

	m := metricset.New()
	sent := m.Counter("app_sent_total", "Messages sent.")
	m.Gauge("app_queue", "Messages waiting.", func() float64 { return 3 })
	latency := m.Histogram("app_latency_seconds", "Time to send a message.", []float64{.01, .1})
	errs := m.CounterVec("app_errors_total", "Failed sends, by peer and cause.", "peer", "cause")
	errs.With("b", "timeout") // present at 0 from the start

	// Series read once per scrape, written by the program itself.
	m.Help("app_disk_bytes", "Bytes on disk.")
	m.Set.RegisterMetricsWriter(func(w io.Writer) {
		metrics.WriteGaugeUint64(w, "app_disk_bytes", 4096)
	})

	sent.Add(2)
	latency.Update(.05)
	errs.With("a", "refused").Inc()

	var b strings.Builder
	m.WritePrometheus(&b)
	own, _, _ := strings.Cut(b.String(), "# HELP go_") // then the Go runtime and process series
	fmt.Fprint(os.Stdout, own)
	// Output:
	// # HELP app_errors_total Failed sends, by peer and cause.
	// # TYPE app_errors_total counter
	// app_errors_total{cause="refused",peer="a"} 1
	// app_errors_total{cause="timeout",peer="b"} 0
	// # HELP app_latency_seconds Time to send a message.
	// # TYPE app_latency_seconds histogram
	// app_latency_seconds_bucket{le="0.01"} 0
	// app_latency_seconds_bucket{le="0.1"} 1
	// app_latency_seconds_bucket{le="+Inf"} 1
	// app_latency_seconds_sum 0.05
	// app_latency_seconds_count 1
	// # HELP app_queue Messages waiting.
	// # TYPE app_queue gauge
	// app_queue 3
	// # HELP app_sent_total Messages sent.
	// # TYPE app_sent_total counter
	// app_sent_total 2
	// # HELP app_disk_bytes Bytes on disk.
	// # TYPE app_disk_bytes gauge
	// app_disk_bytes 4096
}
