package sink

import (
	"strconv"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/buffer/metricset"
)

// metrics are the sink's Prometheus series, in a set of their own.
type metrics struct {
	reg        *metricset.Metrics
	records    *vm.Counter
	rows       *vm.Counter
	duplicates *vm.Counter
	batches    *vm.Counter
	skipped    map[string]*vm.Counter // by reason
	dbErrors   *vm.Counter
	commitErrs *vm.Counter
	batchTime  *vm.PrometheusHistogram
	deleted    *vm.Counter
	dbUp       *vm.Gauge
	kafkaUp    *vm.Gauge
}

func newMetrics() *metrics {
	reg := metricset.New()
	m := &metrics{
		reg:        reg,
		records:    reg.Counter("sink_records_total", "Kafka records consumed (and committed after their batch was stored)."),
		rows:       reg.Counter("sink_rows_written_total", "Rows inserted into readings."),
		duplicates: reg.Counter("sink_duplicates_total", "Readings already in readings (redelivered, or twice in the topic): not inserted again."),
		batches:    reg.Counter("sink_batches_total", "Database transactions committed."),
		skipped:    map[string]*vm.Counter{},
		dbErrors:   reg.Counter("sink_db_errors_total", "Failed database connects and batch writes (each retried)."),
		commitErrs: reg.Counter("sink_commit_errors_total",
			"Kafka offset commits that failed (the records come back and are dropped as duplicates)."),
		batchTime: reg.Histogram("sink_batch_seconds", "Time to store one batch (COPY, INSERT, COMMIT, offset commit).",
			[]float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10}),
		deleted: reg.Counter("sink_retention_deleted_total", "Rows deleted by SINK_RETENTION."),
		dbUp:    reg.Gauge("sink_db_ready", "1 while PostgreSQL takes our writes.", nil),
		kafkaUp: reg.Gauge("sink_kafka_ready", "1 while Kafka answers.", nil),
	}
	skipped := reg.CounterVec("sink_skipped_total",
		"Records skipped: decode (not a reading), column (does not fit the table), refused (PostgreSQL refused the row).", "reason")
	for _, r := range []string{reasonDecode, reasonColumn, reasonRefused} {
		m.skipped[r] = skipped.With(r)
	}
	reg.Help("sink_lag_records",
		"Records in the partition after the last committed offset (high watermark minus committed), per assigned partition.")
	return m
}

// Reasons a record is skipped (the reason label of sink_skipped_total).
const (
	reasonDecode  = "decode"
	reasonColumn  = "column"
	reasonRefused = "refused"
)

// setLag sets sink_lag_records of a partition, adding the series the first time.
func (m *metrics) setLag(topic string, partition int32, records int64) {
	m.reg.Set.GetOrCreateGauge(lagSeries(topic, partition), nil).Set(float64(records))
}

// dropLag removes sink_lag_records of a partition this replica no longer owns.
func (m *metrics) dropLag(topic string, partition int32) {
	m.reg.Set.UnregisterMetric(lagSeries(topic, partition))
}

// lagSeries is the series of a partition's lag:
// sink_lag_records{partition="0",topic="t"}.
func lagSeries(topic string, partition int32) string {
	return metricset.Name("sink_lag_records", "topic", topic, "partition", strconv.Itoa(int(partition)))
}
