package sink

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the sink's Prometheus series, on a registry of its own.
type metrics struct {
	reg        *prometheus.Registry
	records    prometheus.Counter
	rows       prometheus.Counter
	duplicates prometheus.Counter
	batches    prometheus.Counter
	skipped    *prometheus.CounterVec
	dbErrors   prometheus.Counter
	commitErrs prometheus.Counter
	batchTime  prometheus.Histogram
	lag        *prometheus.GaugeVec
	deleted    prometheus.Counter
	dbUp       prometheus.Gauge
	kafkaUp    prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "sink_records_total",
			Help: "Kafka records consumed (and committed after their batch was stored)."}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{Name: "sink_rows_written_total",
			Help: "Rows inserted into readings."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "sink_duplicates_total",
			Help: "Readings already in readings (redelivered, or twice in the topic): not inserted again."}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "sink_batches_total",
			Help: "Database transactions committed."}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sink_skipped_total",
			Help: "Records skipped: decode (not a reading), column (does not fit the table), refused (PostgreSQL refused the row)."},
			[]string{"reason"}),
		dbErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "sink_db_errors_total",
			Help: "Failed database connects and batch writes (each retried)."}),
		commitErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "sink_commit_errors_total",
			Help: "Kafka offset commits that failed (the records come back and are dropped as duplicates)."}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sink_batch_seconds",
			Help:    "Time to store one batch (COPY, INSERT, COMMIT, offset commit).",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sink_lag_records",
			Help: "Records in the partition after the last committed offset (high watermark minus committed), per assigned partition."},
			[]string{"topic", "partition"}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "sink_retention_deleted_total",
			Help: "Rows deleted by SINK_RETENTION."}),
		dbUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sink_db_ready",
			Help: "1 while PostgreSQL takes our writes."}),
		kafkaUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sink_kafka_ready",
			Help: "1 while Kafka answers."}),
	}
	for _, r := range []string{reasonDecode, reasonColumn, reasonRefused} {
		m.skipped.WithLabelValues(r)
	}
	m.reg.MustRegister(m.records, m.rows, m.duplicates, m.batches, m.skipped, m.dbErrors, m.commitErrs,
		m.batchTime, m.lag, m.deleted, m.dbUp, m.kafkaUp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Reasons a record is skipped (the reason label of sink_skipped_total).
const (
	reasonDecode  = "decode"
	reasonColumn  = "column"
	reasonRefused = "refused"
)
