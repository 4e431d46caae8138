// Package statushttp serves the status endpoints every cloud-forwarder
// command exposes on its listen address: /metrics (the Prometheus text
// format, from the command's own metricset.Metrics, then the Go runtime
// and process series), /healthz (the process answers), /readyz (200
// "ready", or 503 with what is missing) and, when asked, Go's pprof.
//
// Metrics are github.com/VictoriaMetrics/metrics series in a metrics.Set of
// the command's own (package buffer/metricset, which edge-agent uses too);
// nothing is registered globally. The one global the library has,
// metrics.ExposeMetadata, is set by the program's main.
//
// It does not decide readiness: the command passes a function that does.
//
// Example:
//
//	m := metricset.New()
//	up := m.Gauge("thing_ready", "1 while the thing works.", nil)
//	h := statushttp.Handler(m, false, func() (bool, string) { return up.Get() == 1, "thing_ready=0" })
//	srv, err := statushttp.Listen(":9103", h)
//	go srv.Serve()
//	defer srv.Shutdown()
package statushttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/metricset"
)

// Handler serves /metrics from m (see metricset.Metrics.WritePrometheus), /healthz,
// /readyz from ready (which returns whether the command is ready and, when
// not, why), and pprof under /debug/pprof/ when withPprof is set.
func Handler(m *metricset.Metrics, withPprof bool, ready func() (bool, string)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.WritePrometheus(w)
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := ready(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", why)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Server is the HTTP server of a command's status endpoints.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr (":9103", "127.0.0.1:0") for h.
func Listen(addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return &Server{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Addr is the bound address (with the port picked for ":0").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown, then returns nil.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// Shutdown stops the server, giving requests in progress a second.
func (s *Server) Shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}
