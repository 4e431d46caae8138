package statushttp

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

func TestMain(m *testing.M) {
	metrics.ExposeMetadata(true) // as cloud-forwarder's main does
	m.Run()
}

func TestEndpoints(t *testing.T) {
	m := NewMetrics()
	m.Counter("things_total", "Things.").Add(3)
	var up atomic.Bool
	srv, err := Listen("127.0.0.1:0", Handler(m, false, func() (bool, string) { return up.Load(), "db_ready=false" }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		path string
		up   bool
		code int
		body string
	}{
		{"/healthz", false, 200, "ok\n"},
		{"/readyz", false, 503, "not ready: db_ready=false\n"},
		{"/readyz", true, 200, "ready\n"},
		{"/metrics", false, 200, "# HELP things_total Things.\n# TYPE things_total counter\nthings_total 3\n"},
		{"/metrics", false, 200, "\nprocess_resident_memory_bytes "},
		{"/metrics", false, 200, "\ngo_memstats_heap_sys_bytes "},
		{"/metrics", false, 200, "\nprocess_open_fds "},
		{"/debug/pprof/", false, 404, ""},
	}
	for _, tc := range tests {
		up.Store(tc.up)
		code, body := get(tc.path)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s (up=%v) = %d %q, want %d %q", tc.path, tc.up, code, body, tc.code, tc.body)
		}
	}
	srv.Shutdown()
	if err := <-done; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestPprof(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", Handler(NewMetrics(), true, func() (bool, string) { return true, "" }))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	defer srv.Shutdown()
	resp, err := http.Get("http://" + srv.Addr() + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine") {
		t.Errorf("GET /debug/pprof/ = %d %.200q, want 200 and the profiles", resp.StatusCode, b)
	}
}

// TestExposition checks the text format of each kind of series: HELP with
// its text (escaped) and TYPE once per family, labelled series, a
// histogram's cumulative le buckets, a series removed at run time.
func TestExposition(t *testing.T) {
	m := NewMetrics()
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
