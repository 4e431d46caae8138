package forwarder

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the forwarder's Prometheus series, on a registry of its own.
type metrics struct {
	reg           *prometheus.Registry
	received      prometheus.Counter
	redelivered   prometheus.Counter
	produced      prometheus.Counter
	dlq           prometheus.Counter
	acked         prometheus.Counter
	produceErrors prometheus.Counter
	latency       prometheus.Histogram
	lag           prometheus.Gauge
	mqttUp        prometheus.Gauge
	kafkaUp       prometheus.Gauge
	confirmations prometheus.Counter
	confirmedSeqs prometheus.Counter
	confirmErrors prometheus.Counter
	unconfirmable prometheus.Counter
	refused       prometheus.Counter
	dropped       prometheus.Counter
}

func newMetrics(inFlight, oldestUnacked func() float64) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_received_total",
			Help: "MQTT messages received."}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_redelivered_total",
			Help: "MQTT messages received with the DUP flag (redelivered by the broker)."}),
		produced: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_produced_total",
			Help: "Readings acknowledged by Kafka on the main topic."}),
		dlq: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_dlq_total",
			Help: "Invalid payloads acknowledged by Kafka on the dead-letter topic."}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_acked_total",
			Help: "MQTT PUBACKs sent (after Kafka acknowledged the record)."}),
		produceErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_produce_errors_total",
			Help: "Records whose Kafka write failed and was retried."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "forwarder_produce_latency_seconds",
			Help:    "Time from MQTT receive to Kafka acknowledgement.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "forwarder_lag_seconds",
			Help: "Age of the newest reading Kafka acknowledged (now minus its ts) when it was acknowledged."}),
		mqttUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "forwarder_mqtt_connected",
			Help: "1 while connected to the MQTT broker."}),
		kafkaUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "forwarder_kafka_ready",
			Help: "1 while Kafka accepts our records."}),
		confirmations: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_confirmations_published_total",
			Help: "Confirmation messages published to devices and acknowledged by the broker."}),
		confirmedSeqs: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_confirmed_seqs_total",
			Help: "Seqs covered by the confirmations the broker acknowledged."}),
		confirmErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_confirm_errors_total",
			Help: "Confirmation publishes that failed or timed out; their seqs are sent again."}),
		unconfirmable: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_dlq_unconfirmable_total",
			Help: "Dead-lettered payloads whose topic or seq could not be read, so no device could be confirmed."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_refused_total",
			Help: "Records Kafka refused for good (too large, invalid timestamp, corrupt, invalid): sent to the DLQ instead."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "forwarder_dropped_total",
			Help: "Dead letters the DLQ refused even without their value: acked on MQTT, not confirmed, in no topic."}),
	}
	m.reg.MustRegister(m.received, m.redelivered, m.produced, m.dlq, m.acked, m.produceErrors,
		m.latency, m.lag, m.mqttUp, m.kafkaUp, m.confirmations, m.confirmedSeqs, m.confirmErrors, m.unconfirmable,
		m.refused, m.dropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "forwarder_oldest_unacked_seconds",
			Help: "Age of the oldest message received from MQTT and not yet acked (0 when none): grows while a record is stuck."}, oldestUnacked),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "forwarder_in_flight",
			Help: "Messages received from MQTT and not yet acked."}, inFlight),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
