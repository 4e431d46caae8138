package sink

import (
	"maps"
	"regexp"
	"strings"
	"testing"

	vm "github.com/VictoriaMetrics/metrics"
)

// TestMetricFamilies pins the sink's series as client_golang exposed them:
// names, types, HELP text, labels and buckets (docs/SINK.md and the tests
// read them), and a revoked partition's lag series going away.
func TestMetricFamilies(t *testing.T) {
	vm.ExposeMetadata(true) // as cloud-forwarder's main has it
	t.Cleanup(func() { vm.ExposeMetadata(false) })
	m := newMetrics()
	m.records.Add(5)
	m.skipped[reasonDecode].Inc()
	m.batchTime.Update(.03)
	m.setLag("sensor-readings", 0, 12)
	m.setLag("sensor-readings", 1, 7)
	m.setLag("sensor-readings", 1, 8)
	m.dropLag("sensor-readings", 0)
	var b strings.Builder
	m.reg.WritePrometheus(&b)
	text, _, _ := strings.Cut(b.String(), "# HELP go_")

	want := map[string]string{
		"sink_records_total": "counter", "sink_rows_written_total": "counter", "sink_duplicates_total": "counter",
		"sink_batches_total": "counter", "sink_skipped_total": "counter", "sink_db_errors_total": "counter",
		"sink_commit_errors_total": "counter", "sink_batch_seconds": "histogram", "sink_lag_records": "gauge",
		"sink_retention_deleted_total": "counter", "sink_db_ready": "gauge", "sink_kafka_ready": "gauge",
	}
	got := map[string]string{}
	for _, f := range regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`).FindAllStringSubmatch(text, -1) {
		got[f[1]] = f[2]
		if !regexp.MustCompile(`(?m)^# HELP ` + f[1] + ` \S`).MatchString(text) {
			t.Errorf("%s has no HELP text", f[1])
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("families = %v\nwant %v", got, want)
	}
	for _, s := range []string{
		"\nsink_records_total 5\n",
		"\nsink_skipped_total{reason=\"column\"} 0\nsink_skipped_total{reason=\"decode\"} 1\nsink_skipped_total{reason=\"refused\"} 0\n",
		"# TYPE sink_lag_records gauge\nsink_lag_records{partition=\"1\",topic=\"sensor-readings\"} 8\n# HELP ",
		"\nsink_batch_seconds_bucket{le=\"0.02\"} 0\nsink_batch_seconds_bucket{le=\"0.05\"} 1\n",
		"\nsink_batch_seconds_bucket{le=\"10\"} 1\nsink_batch_seconds_bucket{le=\"+Inf\"} 1\nsink_batch_seconds_sum 0.03\nsink_batch_seconds_count 1\n",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("/metrics has no %q:\n%s", s, text)
		}
	}
	if strings.Contains(text, `partition="0"`) {
		t.Errorf("partition 0's lag is still there after dropLag:\n%s", text)
	}
}
