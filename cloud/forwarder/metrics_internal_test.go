package forwarder

import (
	"maps"
	"regexp"
	"strings"
	"testing"

	vm "github.com/VictoriaMetrics/metrics"
)

// exposition is m's own series as /metrics shows them, with HELP and TYPE
// (as cloud-forwarder's main has them), without go_* and process_*.
func exposition(t *testing.T, write func(*strings.Builder)) string {
	t.Helper()
	vm.ExposeMetadata(true)
	t.Cleanup(func() { vm.ExposeMetadata(false) })
	var b strings.Builder
	write(&b)
	own, _, _ := strings.Cut(b.String(), "# HELP go_")
	return own
}

// families are the TYPE of each family in text, and fails the test for a
// family without HELP text.
func families(t *testing.T, text string) map[string]string {
	t.Helper()
	types := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`).FindAllStringSubmatch(text, -1) {
		types[m[1]] = m[2]
		if !regexp.MustCompile(`(?m)^# HELP ` + m[1] + ` \S`).MatchString(text) {
			t.Errorf("%s has no HELP text", m[1])
		}
	}
	return types
}

// TestMetricFamilies pins the forwarder's series as client_golang exposed
// them: names, types, HELP text, the latency buckets (docs/FORWARDER.md,
// scripts/e2e and cloud/bench read them).
func TestMetricFamilies(t *testing.T) {
	m := newMetrics(func() float64 { return 3 }, func() float64 { return 1.5 })
	m.reg.Gauge("forwarder_confirm_pending_devices", "Devices.", func() float64 { return 2 }) // as New adds it
	m.produced.Add(4)
	m.acked.Add(4)
	m.received.Inc()
	m.latency.Update(.003)
	m.latency.Update(45)
	m.mqttUp.Set(1)
	text := exposition(t, func(b *strings.Builder) { m.reg.WritePrometheus(b) })

	want := map[string]string{
		"forwarder_received_total": "counter", "forwarder_redelivered_total": "counter",
		"forwarder_produced_total": "counter", "forwarder_dlq_total": "counter",
		"forwarder_acked_total": "counter", "forwarder_produce_errors_total": "counter",
		"forwarder_produce_latency_seconds": "histogram", "forwarder_lag_seconds": "gauge",
		"forwarder_mqtt_connected": "gauge", "forwarder_kafka_ready": "gauge",
		"forwarder_confirmations_published_total": "counter", "forwarder_confirmed_seqs_total": "counter",
		"forwarder_confirm_errors_total": "counter", "forwarder_dlq_unconfirmable_total": "counter",
		"forwarder_refused_total": "counter", "forwarder_dlq_refused_total": "counter",
		"forwarder_oldest_unacked_seconds": "gauge", "forwarder_in_flight": "gauge",
		"forwarder_confirm_pending_devices": "gauge", "forwarder_status_relayed_total": "counter",
		"forwarder_status_dropped_total": "counter",
	}
	if got := families(t, text); !maps.Equal(got, want) {
		t.Errorf("families = %v\nwant %v", got, want)
	}
	for _, s := range []string{
		"\nforwarder_produced_total 4\n", "\nforwarder_acked_total 4\n", "\nforwarder_received_total 1\n",
		"\nforwarder_dlq_total 0\n", "\nforwarder_in_flight 3\n", "\nforwarder_oldest_unacked_seconds 1.5\n",
		"\nforwarder_mqtt_connected 1\n", "\nforwarder_kafka_ready 0\n", "\nforwarder_confirm_pending_devices 2\n",
		`
forwarder_produce_latency_seconds_bucket{le="0.001"} 0
forwarder_produce_latency_seconds_bucket{le="0.002"} 0
forwarder_produce_latency_seconds_bucket{le="0.005"} 1
forwarder_produce_latency_seconds_bucket{le="0.01"} 1
forwarder_produce_latency_seconds_bucket{le="0.02"} 1
forwarder_produce_latency_seconds_bucket{le="0.05"} 1
forwarder_produce_latency_seconds_bucket{le="0.1"} 1
forwarder_produce_latency_seconds_bucket{le="0.25"} 1
forwarder_produce_latency_seconds_bucket{le="0.5"} 1
forwarder_produce_latency_seconds_bucket{le="1"} 1
forwarder_produce_latency_seconds_bucket{le="2.5"} 1
forwarder_produce_latency_seconds_bucket{le="5"} 1
forwarder_produce_latency_seconds_bucket{le="10"} 1
forwarder_produce_latency_seconds_bucket{le="30"} 1
forwarder_produce_latency_seconds_bucket{le="+Inf"} 2
forwarder_produce_latency_seconds_sum 45.003
forwarder_produce_latency_seconds_count 2
`,
	} {
		if !strings.Contains(text, s) {
			t.Errorf("/metrics has no %q:\n%s", s, text)
		}
	}
}
