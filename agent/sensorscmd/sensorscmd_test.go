package sensorscmd_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/agent/sensorscmd"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

var agentBin string

// TestMain builds the real edge-agent binary; the tests run it the way a
// user does on a new Pi.
func TestMain(m *testing.M) {
	testkit.Main(m, &agentBin, "github.com/edgepipe/sensorpipe/agent/cmd/edge-agent")
}

// writeConfig writes a valid agent config with the given sensors entries
// and sysfs_root pointing at the fixture tree.
func writeConfig(t *testing.T, sensors string) string {
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
`, sensors, root)
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
	for name, want := range map[string]string{
		"ds18b20-2":   "ds18b20 ds18b20-2: power-on reset value 85 °C",
		"flaky":       "sim: injected failure (fail_rate)",
		"bme280-0x76": `sensor bme280-0x76: bme280 bus 97 addr 0x76: I2C bus error: no /dev/i2c-97`,
	} {
		r := byName[name]
		if r.OK || r.Values != nil || !strings.Contains(r.Error, want) {
			t.Errorf("%s = %+v, want error containing %q", name, r, want)
		}
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
