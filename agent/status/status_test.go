package status_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/agent/status"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/fault"
)

func TestMain(m *testing.M) {
	metrics.ExposeMetadata(true) // as edge-agent's main does
	m.Run()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	buf, err := buffer.Open(filepath.Join(t.TempDir(), "b.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	r := &reading.Reading{DeviceID: "pi-1", Sensor: "sim-1", Kind: "sim", TS: time.Now().Add(-time.Minute).UTC(), TimeSynced: true,
		Values: map[string]float64{reading.Temperature: 20}}
	if err := buf.Append(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	m := status.NewMetrics(buf.Stats)
	m.Readings.With("sim-1").Inc()
	m.SensorErrors.With("dht22-gpio4", "crc").Add(3)
	var board health.Board
	board.Track([]string{"dht22-gpio4", "sim-1", "new-1"})
	good := time.Date(2026, 11, 25, 10, 15, 2, 125e6, time.UTC)
	board.Good("sim-1", good)
	board.Good("dht22-gpio4", good)
	for range 3 {
		board.Fail("dht22-gpio4", good.Add(time.Minute), fault.Mark(fault.CRC, errors.New("EIO")))
	}
	m.WatchHealth(&board)
	m.PublishLatency.Update(0.004)

	connected := false
	srv, err := status.Listen("127.0.0.1:0", status.Options{
		Metrics: m.Set,
		Healthy: func() error { _, err := buf.Stats(); return err },
		Ready: func() error {
			if !connected {
				return errors.New("mqtt not connected")
			}
			return nil
		},
		Mounts: map[string]http.Handler{"/buffer/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "buffer debug "+r.URL.Path)
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	base := "http://" + srv.Addr()

	code, body := get(t, base+"/metrics")
	for _, want := range []string{
		`edge_agent_readings_total{sensor="sim-1"} 1`,
		`edge_agent_sensor_errors_total{class="crc",sensor="dht22-gpio4"} 3`,
		`edge_agent_sensor_consecutive_failures{sensor="dht22-gpio4"} 3`,
		`edge_agent_sensor_consecutive_failures{sensor="sim-1"} 0`,
		`edge_agent_sensor_last_good_timestamp_seconds{sensor="dht22-gpio4"} 1.795601702125e+09`,
		`edge_agent_sensor_last_good_timestamp_seconds{sensor="sim-1"} 1.795601702125e+09`,
		`edge_agent_sensor_last_good_timestamp_seconds{sensor="new-1"} 0`,
		`edge_agent_buffer_readings 1`,
		`edge_agent_buffer_dropped_total{reason="max_bytes"} 0`,
		`edge_agent_publish_latency_seconds_bucket{le="0.005"} 1`,
		`edge_agent_mqtt_connected 0`,
		`edge_agent_published_total 0`,
		`process_resident_memory_bytes`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}
	if !strings.Contains(body, "edge_agent_buffer_oldest_age_seconds 6") {
		t.Errorf("oldest age not about 60s:\n%s", grep(body, "oldest_age"))
	}
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "mqtt not connected") {
		t.Errorf("/readyz while disconnected = %d %q", code, body)
	}
	connected = true
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz while connected = %d", code)
	}
	if code, body := get(t, base+"/buffer/stats"); code != 200 || body != "buffer debug /buffer/stats" {
		t.Errorf("/buffer/stats = %d %q", code, body)
	}
	buf.Close()
	if code, _ := get(t, base+"/healthz"); code != 503 {
		t.Errorf("/healthz with the buffer closed = %d, want 503", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestListenBusyPort(t *testing.T) {
	a, err := status.Listen("127.0.0.1:0", status.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go a.Serve(ctx)
	if _, err := status.Listen(a.Addr(), status.Options{}); err == nil {
		t.Fatal("second Listen on a busy port succeeded")
	}
}

// TestMetricFamilies pins the agent's own series as client_golang exposed
// them before the move to VictoriaMetrics/metrics: every HELP and TYPE
// line, series name, label set and histogram bucket (docs/AGENT.md,
// alerts and the README check name them). testdata/families.golden is
// main's edge-agent /metrics with sensors sim-1 and sim-2, values cut.
func TestMetricFamilies(t *testing.T) {
	buf, err := buffer.Open(filepath.Join(t.TempDir(), "b.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	m := status.NewMetrics(buf.Stats)
	sensors := []string{"sim-1", "sim-2"}
	for _, s := range sensors { // as the pollers do at start
		m.Readings.With(s)
		for _, c := range fault.Classes() {
			m.SensorErrors.With(s, string(c))
		}
	}
	var board health.Board
	board.Track(sensors)
	m.WatchHealth(&board)
	m.WatchDelivery(func() (int, time.Time) { return 0, time.Time{} })

	var b strings.Builder
	m.Set.WritePrometheus(&b)
	var got []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "# HELP edge_agent_") || strings.HasPrefix(l, "# TYPE edge_agent_") {
			got = append(got, l)
		} else if strings.HasPrefix(l, "edge_agent_") {
			got = append(got, l[:strings.LastIndexByte(l, ' ')])
		}
	}
	slices.Sort(got)
	raw, err := os.ReadFile("testdata/families.golden")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "# HELP ") || strings.HasPrefix(l, "# TYPE ") || strings.HasPrefix(l, "edge_agent_") {
			want = append(want, l)
		}
	}
	if !slices.Equal(got, want) {
		for _, l := range want {
			if !slices.Contains(got, l) {
				t.Errorf("missing: %s", l)
			}
		}
		for _, l := range got {
			if !slices.Contains(want, l) {
				t.Errorf("not in main's /metrics: %s", l)
			}
		}
	}
}

// TestMetricsWithoutBuffer: when Stats fails (the buffer is closed) the
// buffer's series are left out and the rest is served.
func TestMetricsWithoutBuffer(t *testing.T) {
	buf, err := buffer.Open(filepath.Join(t.TempDir(), "b.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := status.NewMetrics(buf.Stats)
	m.Published.Add(2)
	buf.Close()
	var b strings.Builder
	m.Set.WritePrometheus(&b)
	if strings.Contains(b.String(), "edge_agent_buffer_readings") {
		t.Errorf("buffer series written after Stats failed:\n%s", grep(b.String(), "edge_agent_buffer"))
	}
	if !strings.Contains(b.String(), "\nedge_agent_published_total 2\n") {
		t.Errorf("no edge_agent_published_total 2:\n%s", b.String())
	}
}
