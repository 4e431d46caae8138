package metricset

import (
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

func TestName(t *testing.T) {
	for _, tc := range []struct {
		family string
		labels []string
		want   string
	}{
		{"x_total", nil, "x_total"},
		{"x_total", []string{"sensor", "s1", "class", "crc"}, `x_total{class="crc",sensor="s1"}`},
		{"x", []string{"k", `a"b\c` + "\n"}, `x{k="a\"b\\c\n"}`},
	} {
		if got := Name(tc.family, tc.labels...); got != tc.want {
			t.Errorf("Name(%q, %q) = %s, want %s", tc.family, tc.labels, got, tc.want)
		}
	}
}

func TestCounterVecWithSameSeries(t *testing.T) {
	m := New()
	v := m.CounterVec("x_total", "X.", "b", "a")
	v.With("1", "2").Inc()
	v.With("1", "2").Add(2)
	if got := v.With("1", "2").Get(); got != 3 {
		t.Errorf("count = %d, want 3 (With must return the same counter)", got)
	}
	if got := m.Set.GetOrCreateCounter(`x_total{a="2",b="1"}`).Get(); got != 3 {
		t.Errorf(`x_total{a="2",b="1"} = %d, want 3`, got)
	}
}

// TestExposition checks the text format of each kind of series: HELP with
// its text (escaped) and TYPE once per family, labelled series, a
// histogram's cumulative le buckets, a series removed at run time.
func TestExposition(t *testing.T) {
	metrics.ExposeMetadata(true)
	t.Cleanup(func() { metrics.ExposeMetadata(false) })
	m := New()
	h := m.Histogram("op_seconds", "Time of one op.", []float64{.001, .25, 1, 30})
	for _, v := range []float64{.0005, .1, .2, 2, 100} {
		h.Update(v)
	}
	m.Gauge("queue_depth", "Items waiting.", func() float64 { return 7 })
	m.Gauge("ready", `1 while ready; a \ and a
newline.`, nil).Set(1)
	for _, r := range []string{"a", "b"} {
		m.Counter(`skipped_total{reason="`+r+`"}`, "Skipped, by reason.").Inc()
	}
	m.Help("lag", "Lag per partition.")
	m.Set.GetOrCreateGauge(`lag{partition="0",topic="t"}`, nil).Set(5)
	m.Set.GetOrCreateGauge(`lag{partition="1",topic="t"}`, nil).Set(6)
	m.Set.UnregisterMetric(`lag{partition="1",topic="t"}`)

	var b strings.Builder
	m.WritePrometheus(&b)
	own, _, _ := strings.Cut(b.String(), "# HELP go_")
	want := `# HELP lag Lag per partition.
# TYPE lag gauge
lag{partition="0",topic="t"} 5
# HELP op_seconds Time of one op.
# TYPE op_seconds histogram
op_seconds_bucket{le="0.001"} 1
op_seconds_bucket{le="0.25"} 3
op_seconds_bucket{le="1"} 3
op_seconds_bucket{le="30"} 4
op_seconds_bucket{le="+Inf"} 5
op_seconds_sum 102.3005
op_seconds_count 5
# HELP queue_depth Items waiting.
# TYPE queue_depth gauge
queue_depth 7
# HELP ready 1 while ready; a \\ and a\nnewline.
# TYPE ready gauge
ready 1
# HELP skipped_total Skipped, by reason.
# TYPE skipped_total counter
skipped_total{reason="a"} 1
skipped_total{reason="b"} 1
`
	if own != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", own, want)
	}
}

// TestGoAndProcessSeries checks that the runtime and process series follow
// the set's (process_resident_memory_bytes is what the benchmarks read).
func TestGoAndProcessSeries(t *testing.T) {
	var b strings.Builder
	New().WritePrometheus(&b)
	for _, want := range []string{"\nprocess_resident_memory_bytes ", "\ngo_goroutines ", "\nprocess_open_fds "} {
		if !strings.Contains("\n"+b.String(), want) {
			t.Errorf("no %q in:\n%s", want, b.String())
		}
	}
}
