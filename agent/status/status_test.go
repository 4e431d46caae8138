package status_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/agent/status"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/fault"
)

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
	reg := prometheus.NewRegistry()
	m := status.NewMetrics(reg, buf.Stats)
	m.Readings.WithLabelValues("sim-1").Inc()
	m.SensorErrors.WithLabelValues("dht22-gpio4", "crc").Add(3)
	var board health.Board
	board.Track([]string{"dht22-gpio4", "sim-1", "new-1"})
	good := time.Date(2026, 11, 25, 10, 15, 2, 125e6, time.UTC)
	board.Good("sim-1", good)
	board.Good("dht22-gpio4", good)
	for range 3 {
		board.Fail("dht22-gpio4", good.Add(time.Minute), fault.Mark(fault.CRC, errors.New("EIO")))
	}
	status.WatchHealth(reg, &board)
	m.PublishLatency.Observe(0.004)

	connected := false
	srv, err := status.Listen("127.0.0.1:0", status.Options{
		Registry: reg,
		Healthy:  func() error { _, err := buf.Stats(); return err },
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
