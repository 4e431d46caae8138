package forwarder

import (
	vm "github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/buffer/metricset"
)

// metrics are the forwarder's Prometheus series, in a set of their own.
type metrics struct {
	reg           *metricset.Metrics
	received      *vm.Counter
	redelivered   *vm.Counter
	produced      *vm.Counter
	relayed       *vm.Counter
	statusDropped *vm.Counter
	dlq           *vm.Counter
	acked         *vm.Counter
	produceErrors *vm.Counter
	latency       *vm.PrometheusHistogram
	lag           *vm.Gauge
	mqttUp        *vm.Gauge
	kafkaUp       *vm.Gauge
	confirmations *vm.Counter
	confirmedSeqs *vm.Counter
	confirmErrors *vm.Counter
	unconfirmable *vm.Counter
	refused       *vm.Counter
	dlqRefused    *vm.Counter
}

func newMetrics(inFlight, oldestUnacked func() float64) *metrics {
	reg := metricset.New()
	c := reg.Counter
	m := &metrics{
		reg:         reg,
		received:    c("forwarder_received_total", "MQTT messages received."),
		redelivered: c("forwarder_redelivered_total", "MQTT messages received with the DUP flag (redelivered by the broker)."),
		produced:    c("forwarder_produced_total", "Readings acknowledged by Kafka on the main topic."),
		relayed:     c("forwarder_status_relayed_total", "Heartbeats acknowledged by Kafka on the status topic (KAFKA_STATUS_TOPIC)."),
		statusDropped: c("forwarder_status_dropped_total",
			"Heartbeats acked on MQTT without being relayed: the status topic did not exist."),
		dlq:   c("forwarder_dlq_total", "Invalid payloads acknowledged by Kafka on the dead-letter topic."),
		acked: c("forwarder_acked_total", "MQTT PUBACKs sent (after Kafka acknowledged the record)."),
		produceErrors: c("forwarder_produce_errors_total",
			"Failed Kafka writes that are retried: connections that failed, records refused for a reason of the cluster."),
		latency: reg.Histogram("forwarder_produce_latency_seconds", "Time from MQTT receive to Kafka acknowledgement.",
			[]float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}),
		lag: reg.Gauge("forwarder_lag_seconds",
			"Age of the newest reading Kafka acknowledged (now minus its ts) when it was acknowledged.", nil),
		mqttUp:        reg.Gauge("forwarder_mqtt_connected", "1 while connected to the MQTT broker.", nil),
		kafkaUp:       reg.Gauge("forwarder_kafka_ready", "1 while Kafka accepts our records.", nil),
		confirmations: c("forwarder_confirmations_published_total", "Confirmation messages published to devices and acknowledged by the broker."),
		confirmedSeqs: c("forwarder_confirmed_seqs_total", "Seqs covered by the confirmations the broker acknowledged."),
		confirmErrors: c("forwarder_confirm_errors_total", "Confirmation publishes that failed or timed out; their seqs are sent again."),
		unconfirmable: c("forwarder_dlq_unconfirmable_total",
			"Dead-lettered payloads whose topic or seq could not be read, so no device could be confirmed."),
		refused: c("forwarder_refused_total",
			"Records Kafka refused for good (too large, invalid timestamp, corrupt, invalid): sent to the DLQ instead."),
		dlqRefused: c("forwarder_dlq_refused_total",
			"Times the DLQ refused a dead letter sent alone: the reading is held (not acked, not confirmed) and retried."),
	}
	reg.Gauge("forwarder_oldest_unacked_seconds",
		"Age of the oldest message received from MQTT and not yet acked (0 when none): grows while a record is stuck.", oldestUnacked)
	reg.Gauge("forwarder_in_flight", "Messages received from MQTT and not yet acked.", inFlight)
	return m
}
