package sensorscmd_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/agent/sensorscmd"
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/i2cfake"
)

var agentBin string

// TestMain builds the real edge-agent binary; the tests run it the way a
// user does on a new Pi.
func TestMain(m *testing.M) {
	testkit.Main(m, &agentBin, "github.com/edgepipe/sensorpipe/agent/cmd/edge-agent")
}

// writeConfig writes a valid agent config with the given sensors entries
// and sysfs_root pointing at the fixture tree, whose status_listen no
// agent answers on.
func writeConfig(t *testing.T, sensors string) string {
	t.Helper()
	return writeConfigStatus(t, sensors, "127.0.0.1:1")
}

// writeConfigStatus is writeConfig with the agent's status_listen.
func writeConfigStatus(t *testing.T, sensors, status string) string {
	t.Helper()
	root, err := filepath.Abs("testdata/sys")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`device_id: test-pi
sensors:
%s
mqtt:
  url: tcp://127.0.0.1:1883
sysfs_root: %s
status_listen: %q
`, sensors, root, status)
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// run executes the binary and returns stdout, stderr and the exit code.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(agentBin, args...)
	cmd.Env = append(os.Environ(), "EDGE_AGENT_MQTT_PASSWORD=")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

const goodSensors = `  - {name: sim-1, driver: sim, seed: 42, interval: 1s}
  - {name: dht22-gpio4, driver: dht22, iio_device: auto, interval: 5s}
  - {name: ds18b20-1, driver: ds18b20, w1_id: 28-0316a2793aff, interval: 30s}`

func TestHumanAllGood(t *testing.T) {
	cfg := writeConfig(t, goodSensors)
	stdout, stderr, code := run(t, "sensors", "--config", cfg, "--dev", t.TempDir())
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"Configured sensors (" + cfg + "):",
		"dht22-gpio4 dht22 dht22",
		"humidity_pct=55.3 temperature_c=21.5",
		"ds18b20-1 ds18b20 ds18b20",
		"temperature_c=23.125",
		"sim-1 sim sim",
		"iio iio:device0 dht11/dht22",
		"w1 28-000008d1e4a2 ds18b20",
		"w1 28-0316a2793aff ds18b20",
		"note: i2c: no ",
	} {
		// Column widths are tabwriter's business; compare words.
		if !strings.Contains(strings.Join(strings.Fields(stdout), " "), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
}

func TestJSONWithFailures(t *testing.T) {
	cfg := writeConfig(t, goodSensors+`
  - {name: ds18b20-2, driver: ds18b20, w1_id: 28-000008d1e4a2}
  - {name: flaky, driver: sim, fail_rate: 1}
  - {name: bme280-0x76, driver: bme280, bus: "97", address: 0x76}`)
	stdout, stderr, code := run(t, "sensors", "--config", cfg, "--json", "--dev", t.TempDir())
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "3 of 6 configured sensors failed") {
		t.Errorf("stderr = %q", stderr)
	}
	var rep sensorscmd.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	byName := map[string]sensorscmd.Result{}
	for _, r := range rep.Sensors {
		byName[r.Name] = r
	}
	if r := byName["sim-1"]; !r.OK || len(r.Values) != 3 || r.Kind != "sim" {
		t.Errorf("sim-1 = %+v", r)
	}
	if r := byName["dht22-gpio4"]; !r.OK || r.Values["temperature_c"] != 21.5 || r.Values["humidity_pct"] != 55.3 {
		t.Errorf("dht22-gpio4 = %+v", r)
	}
	for name, want := range map[string]struct {
		msg   string
		class fault.Class
	}{
		"ds18b20-2":   {"ds18b20 ds18b20-2: power-on reset value 85 °C", fault.PowerOn},
		"flaky":       {"sim: injected failure (fail_rate)", fault.Other},
		"bme280-0x76": {`sensor bme280-0x76: bme280 bus 97 addr 0x76: I2C bus error: no /dev/i2c-97`, fault.Absent},
	} {
		r := byName[name]
		if r.OK || r.Values != nil || !strings.Contains(r.Error, want.msg) || r.Class != want.class {
			t.Errorf("%s = %+v, want error containing %q of class %q", name, r, want.msg, want.class)
		}
	}
	if r := byName["sim-1"]; r.Class != "" || r.Health != nil {
		t.Errorf("good sensor with a class or, without an agent, a health: %+v", r)
	}
	if rep.Agent != "" || !slices.ContainsFunc(rep.Notes, func(n string) bool {
		return strings.HasPrefix(n, "no running agent answered at http://127.0.0.1:1, so no health history is shown")
	}) {
		t.Errorf("no agent runs, yet agent %q, notes %q", rep.Agent, rep.Notes)
	}
	if len(rep.Found) != 3 {
		t.Errorf("found = %+v, want the dht and two w1 devices", rep.Found)
	}
}

func TestConfigErrors(t *testing.T) {
	tooFast := writeConfig(t, `  - {name: dht22-gpio4, driver: dht22, interval: 1s}`)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"dht faster than the sensor", []string{"--config", tooFast}, "sensors[0]: interval 1s is shorter than the dht22's minimum of 2s"},
		{"config file missing", []string{"--config", filepath.Join(t.TempDir(), "nope.yaml")}, "no such file"},
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined"},
		{"stray argument", []string{"--config", tooFast, "extra"}, "no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := run(t, append([]string{"sensors"}, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, want 2 with %q\nstdout:\n%s\nstderr:\n%s", code, tt.want, stdout, stderr)
			}
		})
	}
}

// TestAgentHealthShown: with the agent running (its status endpoint, here
// serving a board the test fills), both outputs show each sensor's health
// as the agent sees it next to the one-shot read and its class.
func TestAgentHealthShown(t *testing.T) {
	var board health.Board
	board.Track([]string{"sim-1", "ds18b20-2"})
	t0 := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	board.Good("sim-1", t0.Add(9*time.Minute))
	board.Good("ds18b20-2", t0)
	for i := range 7 {
		board.Fail("ds18b20-2", t0.Add(time.Duration(i+1)*time.Minute),
			fmt.Errorf("ds18b20 ds18b20-2: %w", fault.New(fault.PowerOn, "power-on reset value 85 °C")))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /sensors", health.Handler(&board))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	cfg := writeConfigStatus(t, `  - {name: sim-1, driver: sim, seed: 42, interval: 1s}
  - {name: ds18b20-2, driver: ds18b20, w1_id: 28-000008d1e4a2, interval: 30s}
  - {name: new-1, driver: sim, interval: 1s}`, strings.TrimPrefix(srv.URL, "http://"))

	stdout, stderr, code := run(t, "sensors", "--config", cfg, "--json", "--dev", t.TempDir())
	if code != 1 {
		t.Fatalf("exit %d, want 1 (ds18b20-2 fails)\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var rep sensorscmd.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if rep.Agent != srv.URL {
		t.Errorf("agent = %q, want %q", rep.Agent, srv.URL)
	}
	want, _ := board.Snapshot()
	for _, r := range rep.Sensors {
		switch r.Name {
		case "sim-1", "ds18b20-2":
			if r.Health == nil || *r.Health != want[r.Name] {
				t.Errorf("%s: health %+v, want %+v", r.Name, r.Health, want[r.Name])
			}
		case "new-1":
			if r.Health != nil {
				t.Errorf("new-1 is not polled by the agent, yet has health %+v", r.Health)
			}
		}
		if r.Name == "ds18b20-2" && r.Class != fault.PowerOn {
			t.Errorf("one-shot read of ds18b20-2: class %q, want power_on", r.Class)
		}
	}

	stdout, stderr, code = run(t, "sensors", "--config", cfg, "--dev", t.TempDir())
	if code != 1 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	words := strings.Join(strings.Fields(stdout), " ")
	for _, w := range []string{
		"FAILED (power_on): ds18b20 ds18b20-2: power-on reset value 85 °C",
		"Health as the running agent sees it (" + srv.URL + "/sensors):",
		"NAME STATE FAILURES IN A ROW LAST GOOD READ LAST ERROR",
		"sim-1 ok 0 ",
		"ago (" + t0.Add(9*time.Minute).Local().Format(time.DateTime) + ") -",
		"ds18b20-2 failing 7 ",
		"ago (" + t0.Local().Format(time.DateTime) + ") power_on, ",
		"ago (" + t0.Add(7*time.Minute).Local().Format(time.DateTime) + "): ds18b20 ds18b20-2: power-on reset value 85 °C",
		"new-1 - - - not polled by the running agent",
	} {
		if !strings.Contains(words, w) {
			t.Errorf("human output lacks %q:\n%s", w, stdout)
		}
	}
}

// runI2C runs the command in process on the I2C chips of
// testdata/i2c/buses.json, with a /dev that has i2c-1.
func runI2C(t *testing.T, sensors string, args ...string) (sensorscmd.Report, string, error) {
	t.Helper()
	buses, err := i2cfake.Load("testdata/i2c/buses.json")
	if err != nil {
		t.Fatal(err)
	}
	dev := t.TempDir()
	if err := os.WriteFile(filepath.Join(dev, "i2c-1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, sensors)
	var stdout, stderr strings.Builder
	err = sensorscmd.RunWithI2C(t.Context(), append([]string{"--config", cfg, "--json", "--dev", dev}, args...), &stdout, &stderr, buses.Open)
	var rep sensorscmd.Report
	if jerr := json.Unmarshal([]byte(stdout.String()), &rep); jerr != nil {
		t.Fatalf("stdout is not JSON: %v\n%s\nstderr:\n%s", jerr, stdout.String(), stderr.String())
	}
	return rep, stderr.String(), err
}

// TestI2CChips: each I2C chip of the fixture is read once through its
// configured entry and recognised by the probe at its address.
func TestI2CChips(t *testing.T) {
	rep, stderr, err := runI2C(t, `  - {name: aht20-1, driver: aht20, bus: "1", interval: 10s}
  - {name: scd41-1, driver: scd4x, bus: "1", interval: 10s}
  - {name: bh1750-1, driver: bh1750, bus: "1", resolution: high2, interval: 10s}
  - {name: ina219-1, driver: ina219, bus: "1", address: 0x40, shunt_ohms: 0.1, max_current_a: 3.2, interval: 10s}
  - {name: soil-1, driver: ads1115, bus: "1", address: 0x48, interval: 10s, channels: [{input: 0, field: soil_moisture, unit: pct, scale: -62.5, offset: 175}]}
  - {name: aht20-gone, driver: aht20, bus: "2", interval: 10s}`)
	if err == nil || !strings.Contains(err.Error(), "1 of 6 configured sensors failed") {
		t.Fatalf("Run = %v\nstderr:\n%s", err, stderr)
	}
	want := map[string]map[string]float64{
		"aht20-1":  {"temperature_c": 30, "humidity_pct": 50},
		"scd41-1":  {"co2_ppm": 500, "temperature_c": 25, "humidity_pct": 37},
		"bh1750-1": {"illuminance_lux": 14033.33},
		// The fixture's registers are the datasheet example's (100 µA
		// steps); at 3.2 A the step is 97.656 µA: 4000 steps, 2400 x 1.953 mW.
		"ina219-1": {"voltage_v": 12, "current_a": 0.390624, "power_w": 4.6875},
		"soil-1":   {"soil_moisture_pct": 47}, // 0x4000 = 2.048 V
	}
	for _, r := range rep.Sensors {
		w, ok := want[r.Name]
		switch {
		case ok && (!r.OK || !maps.Equal(r.Values, w) || r.Kind != r.Driver):
			t.Errorf("%s = %+v, want values %v", r.Name, r, w)
		case !ok && (r.OK || r.Class != fault.Other || !strings.Contains(r.Error, `no bus "2"`)):
			t.Errorf("%s = %+v, want a failure to open bus 2", r.Name, r)
		}
	}
	var found []string
	for _, f := range rep.Found {
		if f.Type == "i2c" {
			found = append(found, f.ID+" "+f.Kind)
		}
	}
	if w := []string{"1:0x76 bme280", "1:0x38 aht20", "1:0x62 scd4x", "1:0x40 ina219", "1:0x48 ads1x15"}; !slices.Equal(found, w) {
		t.Errorf("found on I2C = %q, want %q", found, w)
	}
}
