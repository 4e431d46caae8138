package statushttp

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/buffer/metricset"
)

func TestMain(m *testing.M) {
	metrics.ExposeMetadata(true) // as cloud-forwarder's main does
	m.Run()
}

func TestEndpoints(t *testing.T) {
	m := metricset.New()
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
	srv, err := Listen("127.0.0.1:0", Handler(metricset.New(), true, func() (bool, string) { return true, "" }))
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
