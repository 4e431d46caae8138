package statushttp

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	var up atomic.Bool
	srv, err := Listen("127.0.0.1:0", Handler(reg, false, func() (bool, string) { return up.Load(), "db_ready=false" }))
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
		{"/metrics", false, 200, "things_total 3"},
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
