// Package status is the agent's local HTTP endpoint (status_listen):
// Prometheus metrics at /metrics, liveness at /healthz, readiness at
// /readyz, and whatever debug handlers the caller mounts (the buffer's
// at /buffer/).
//
// /healthz answers 200 while the process can do its job at all: the buffer
// is open and answers. /readyz answers 200 only when readings are also
// flowing out: healthy AND connected to the MQTT broker. While the broker
// is unreachable the agent keeps buffering (healthy) but is not ready, so
// a monitor can tell "offline, buffering" from "broken". Both answer a
// short text body saying why, and 503 when not ok.
//
// Metrics are github.com/VictoriaMetrics/metrics series in a set the
// caller owns (buffer/metricset); nothing is registered globally. HELP and
// TYPE lines need the library's one process-wide switch,
// metrics.ExposeMetadata(true), which edge-agent's main sets.
//
//	m := status.NewMetrics(buf.Stats)
//	srv, err := status.Listen("127.0.0.1:9101", status.Options{Metrics: m.Set, ...})
//	go srv.Serve(ctx)
//
// It also builds the agent's heartbeat, the retained status message
// (buffer/heartbeat): a Reporter reads its Sources (the buffer's Stats,
// the publisher's unconfirmed readings, the clock, the health board, the
// thermal zones and the Raspberry Pi firmware's throttle flags under the
// sysfs root, the free disk space) and says when the next one is due;
// agent/mqttpub publishes what it returns. It publishes nothing itself.
//
//	rep := status.NewReporter(status.Sources{Buffer: buf.Stats, Health: &board, SysfsRoot: "/sys"},
//		status.ReporterOptions{Interval: time.Minute})
//	pub, err := mqttpub.New(buf, mqttpub.Options{Status: rep, ...})
package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/metricset"
)

// Check returns nil when a condition holds, or why it does not.
type Check func() error

// Options configures the server.
type Options struct {
	Metrics *metricset.Metrics      // /metrics; nil: only the Go runtime and process series
	Healthy Check                   // nil: always healthy
	Ready   Check                   // checked after Healthy; nil: ready when healthy
	Mounts  map[string]http.Handler // extra handlers by pattern, e.g. "/buffer/"
	Logger  *slog.Logger
}

// Server is the status HTTP server.
type Server struct {
	l   net.Listener
	srv *http.Server
	log *slog.Logger
}

// Listen binds addr now, so a busy port is reported at start.
func Listen(addr string, o Options) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status endpoint: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{l: l, log: o.Logger, srv: &http.Server{Handler: Handler(o), ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.l.Addr().String() }

// Serve serves until ctx is cancelled, then shuts down within 1s.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("status endpoint: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Handler builds the mux; exported for tests and for embedding.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	m := o.Metrics
	if m == nil {
		m = metricset.New()
	}
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.WritePrometheus(w)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		answer(w, run(o.Healthy))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		err := run(o.Healthy)
		if err == nil {
			err = run(o.Ready)
		}
		answer(w, err)
	})
	for pattern, h := range o.Mounts {
		mux.Handle(pattern, h)
	}
	return mux
}

func run(c Check) error {
	if c == nil {
		return nil
	}
	return c()
}

func answer(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ok: %v\n", err)
		return
	}
	fmt.Fprintln(w, "ok")
}
