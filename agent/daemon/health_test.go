package daemon_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// TestSensorHealthTelemetry: a DS18B20 whose CRC check fails (the kernel's
// "crc=.. NO", from the driver's fixture tree) next to a good simulated
// sensor. The agent's retained status message, its /metrics and its GET
// /sensors all show the dead probe, its class and its failure count, and
// the good sensor's last good read; the failing probe publishes nothing.
func TestSensorHealthTelemetry(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt, probe := broker.NewCounter(), broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	broker.Subscribe(t, probe, broker.SubOptions{URL: br.URL(), Filter: "sensors/pi-h/ds18b20-1/reading", ClientID: "probe-counter"})
	sysfs, err := filepath.Abs("../../drivers/ds18b20/testdata/crcno")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fmt.Sprintf(`device_id: pi-h
sensors:
  - {name: ds18b20-1, driver: ds18b20, w1_id: auto, interval: 50ms}
  - {name: sim-1, driver: sim, interval: 50ms}
buffer: {path: %s}
mqtt: {url: %q}
status_listen: 127.0.0.1:0
sysfs_root: %s
`, filepath.Join(t.TempDir(), "b.db"), br.URL(), sysfs), nil)
	cfg.StatusInterval = 400 * time.Millisecond // a change is published after 200ms at most
	_, addr := startAgent(t, cfg, daemon.Options{})

	topic := "sensors/pi-h/status"
	var st heartbeat.Heartbeat
	testkit.WaitFor(t, "the retained status to show the failing probe", 10*time.Second, func() bool {
		if br.Retained(topic) == "" {
			return false
		}
		st = statusOf(t, br.Retained(topic))
		return st.Sensors["ds18b20-1"].Fails >= 3 && st.Sensors["sim-1"].State == health.StateOK
	})
	ds := st.Sensors["ds18b20-1"]
	if ds.State != health.StateFailing || ds.ErrClass != string(fault.CRC) || ds.LastGood != 0 || ds.ErrAt == 0 || ds.Err == "" {
		t.Errorf("probe in the status: %+v", ds)
	}
	if sim := st.Sensors["sim-1"]; sim.Fails != 0 || time.Since(time.Unix(sim.LastGood, 0)) > time.Minute {
		t.Errorf("good sensor in the status: %+v", sim)
	}

	_, m := httpGet(t, "http://"+addr+"/metrics")
	for series, ok := range map[string]func(float64) bool{
		`edge_agent_sensor_consecutive_failures{sensor="ds18b20-1"}`:          func(v float64) bool { return v >= 3 },
		`edge_agent_sensor_consecutive_failures{sensor="sim-1"}`:              func(v float64) bool { return v == 0 },
		`edge_agent_sensor_errors_total{class="crc",sensor="ds18b20-1"}`:      func(v float64) bool { return v >= 3 },
		`edge_agent_sensor_errors_total{class="absent",sensor="ds18b20-1"}`:   func(v float64) bool { return v == 0 },
		`edge_agent_sensor_last_good_timestamp_seconds{sensor="ds18b20-1"}`:   func(v float64) bool { return v == 0 },
		`edge_agent_sensor_last_good_timestamp_seconds{sensor="sim-1"}`:       func(v float64) bool { return time.Since(time.Unix(int64(v), 0)) < time.Minute },
		`edge_agent_sensor_errors_total{class="other",sensor="sim-1"}`:        func(v float64) bool { return v == 0 },
		`edge_agent_sensor_errors_total{class="out_of_range",sensor="sim-1"}`: func(v float64) bool { return v == 0 },
	} {
		if v := metricValue(m, series); !ok(v) {
			t.Errorf("%s = %v", series, v)
		}
	}

	code, body := httpGet(t, "http://"+addr+"/sensors")
	var rep health.Report
	if err := json.Unmarshal([]byte(body), &rep); code != 200 || err != nil {
		t.Fatalf("GET /sensors = %d %s (%v)", code, body, err)
	}
	if h := rep.Sensors["ds18b20-1"]; h.LastErrorClass != fault.CRC || h.ConsecutiveFailures < 3 {
		t.Errorf("GET /sensors: probe %+v", h)
	}
	if n := cnt.Unique("pi-h"); n == 0 {
		t.Error("no readings from the good sensor reached the broker")
	}
	if n := probe.Unique("pi-h"); n != 0 {
		t.Errorf("%d readings published for the failing probe", n)
	}
}
