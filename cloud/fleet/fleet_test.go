package fleet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/cloud/fleet"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

type rig struct {
	t   *testing.T
	dir string
	env map[string]string
}

func (r *rig) run(args ...string) (string, error) {
	r.t.Helper()
	var out, errOut bytes.Buffer
	err := fleet.Run(context.Background(), args, func(k string) string { return r.env[k] }, &out, &errOut)
	return out.String() + errOut.String(), err
}

func (r *rig) write(name, content string) string {
	r.t.Helper()
	p := filepath.Join(r.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// startAgent runs an agent trusting keys, until the test ends.
func startAgent(t *testing.T, dir, url, keys string) string {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`device_id: pi-1
sensors: [{name: sim-1, driver: sim, interval: 100ms}]
buffer: {path: %s}
mqtt: {url: %q, delivery: broker}
status_listen: 127.0.0.1:0
fleet: {keys_file: %s, group: greenhouses, grace: 1s}
`, filepath.Join(dir, "buffer.db"), url, keys)), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		done <- daemon.Agent(ctx, cfg, daemon.Options{Clock: clock.Always(true), Notify: func(string) {},
			Listening: func(a string) { addr <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	select {
	case a := <-addr:
		return a
	case err := <-done:
		t.Fatalf("agent: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not start")
	}
	return ""
}

func publishRetained(t *testing.T, url, topic string, payload []byte) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("retainer").SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish(topic, 1, true, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

func report(t *testing.T, addr string) remote.Report {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/fleet")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r remote.Report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestOperatorTool: keygen, push at fleet and group level (the version
// counted up from the one in force), show, and commands with results, as
// an operator runs them against a device on a real broker.
func TestOperatorTool(t *testing.T) {
	br := broker.New(t, broker.Options{})
	r := &rig{t: t, dir: t.TempDir()}
	key, pub := filepath.Join(r.dir, "fleet.key"), filepath.Join(r.dir, "fleet-keys.pem")
	if out, err := r.run("keygen", key, pub); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", fi, err)
	}
	if out, err := r.run("keygen", key, pub); !errors.Is(err, cmdline.ErrUsage) {
		t.Fatalf("keygen over an existing key: %v\n%s", err, out)
	}
	keyPEM, _ := os.ReadFile(key)
	r.env = map[string]string{"FLEET_MQTT_URL": br.URL(), "FLEET_KEY_FILE": key}
	addr := startAgent(t, r.dir, br.URL(), pub)

	iv := r.write("interval.yaml", "sensor_interval: 300ms\n")
	out, err := r.run("config", "push", "--fleet", iv)
	if err != nil || !strings.Contains(out, "fleet config version 1 on sensors/$fleet/config") {
		t.Fatalf("push: %v\n%s", err, out)
	}
	testkit.WaitFor(t, "the device applies fleet version 1", 20*time.Second, func() bool {
		rep := report(t, addr)
		return rep.Version == "1.0.0" && rep.State == remote.StateOK
	})
	out, err = r.run("config", "push", "--fleet", iv)
	if err != nil || !strings.Contains(out, "version 2") {
		t.Fatalf("second push: %v\n%s", err, out)
	}
	if out, err = r.run("config", "push", "--group", "greenhouses", r.write("g.yaml", "sensor_intervals: {sim-1: 200ms}\n"), "--version", "7"); err != nil {
		t.Fatalf("group push: %v\n%s", err, out)
	}
	for _, bad := range []struct{ file, want string }{
		{"device_id: pi-2\n", "device_id"},
		{"mqtt: {password_file: /etc/shadow}\n", "mqtt.password_file"},
		{"sensor_interval: 1ms\n", "too short"},
	} {
		out, err := r.run("config", "push", "--fleet", r.write("bad.yaml", bad.file))
		if !errors.Is(err, cmdline.ErrUsage) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("push %q: %v, want a usage error naming %s\n%s", bad.file, err, bad.want, out)
		}
	}

	out, err = r.run("config", "show", "pi-1", "--group", "greenhouses", "--json")
	if err != nil {
		t.Fatalf("show: %v\n%s", err, out)
	}
	var shown fleet.Shown
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	if shown.Levels[remote.LevelFleet].Version != 2 || shown.Levels[remote.LevelGroup].Version != 7 ||
		shown.Merged["sensor_interval"] != "300ms" || shown.Merged["sensor_intervals"] == nil {
		t.Fatalf("show: %+v", shown)
	}

	testkit.WaitFor(t, "the device applies group version 7", 20*time.Second, func() bool {
		rep := report(t, addr)
		return rep.Version == "2.7.0" && rep.State == remote.StateOK
	})
	out, err = r.run("cmd", "pi-1", "buffer-stats", "--json")
	if err != nil {
		t.Fatalf("cmd: %v\n%s", err, out)
	}
	var res remote.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.OK || res.Name != "buffer-stats" || len(res.Result) == 0 {
		t.Fatalf("cmd result: %+v %v\n%s", res, err, out)
	}
	out, err = r.run("cmd", "pi-1", "resend")
	if !errors.Is(err, fleet.ErrFailed) || !strings.Contains(out, "FAILED") {
		t.Fatalf("resend in broker mode: %v\n%s", err, out)
	}

	// fleet status: the live device reports its config; a heartbeat an
	// hour old and an offline will are not reporting.
	old := fmt.Sprintf(`{"v":2,"state":"online","ts":%d,"agent":"1.0"}`, time.Now().Add(-time.Hour).Unix())
	publishRetained(t, br.URL(), "sensors/pi-dead/status", []byte(old))
	publishRetained(t, br.URL(), "sensors/pi-off/status", []byte(fmt.Sprintf(`{"v":2,"state":"offline","ts":%d}`, time.Now().Unix())))
	out, err = r.run("status", "--json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var devs []fleet.Device
	if err := json.Unmarshal([]byte(out), &devs); err != nil || len(devs) != 3 {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, d := range devs {
		switch d.ID {
		case "pi-1":
			if !d.Reporting || d.Heartbeat.Config == nil || d.Heartbeat.Config.Version != "2.7.0" || d.Heartbeat.Config.Source != "remote" {
				t.Errorf("pi-1: %+v %+v", d, d.Heartbeat.Config)
			}
		case "pi-dead", "pi-off":
			if d.Reporting {
				t.Errorf("%s reported as reporting: %+v", d.ID, d)
			}
		}
	}
	if out, err = r.run("status"); err != nil || !strings.Contains(out, "3 devices, 1 reporting, 2 not reporting") {
		t.Fatalf("status: %v\n%s", err, out)
	}

	// Another key (say, a forwarder's confirmation key) is refused.
	other, _ := sign.Generate()
	otherKey := r.write("other.key", string(other.PrivatePEM()))
	out, err = r.run("cmd", "pi-1", "sensors", "--key", otherKey)
	if !errors.Is(err, fleet.ErrFailed) || !strings.Contains(out, "signature") {
		t.Fatalf("command signed by another key: %v\n%s", err, out)
	}
	// Nothing the tool printed holds the key.
	if strings.Contains(out, strings.Split(string(keyPEM), "\n")[1]) {
		t.Fatal("the tool printed the private key")
	}
}

func TestUsageErrors(t *testing.T) {
	r := &rig{t: t, dir: t.TempDir(), env: map[string]string{}}
	for _, args := range [][]string{
		{},
		{"nope"},
		{"config", "push", "x.yaml"},
		{"config", "push", "--fleet", "--group", "g", "x.yaml"},
		{"config", "push", "--device", "a/b", "x.yaml"},
		{"cmd", "pi-1", "format-disk"},
		{"cmd", "pi-1"},
		{"cmd", "pi-1", "sensors"}, // no broker URL
	} {
		if out, err := r.run(args...); !errors.Is(err, cmdline.ErrUsage) {
			t.Errorf("%q: %v, want a usage error (exit 2)\n%s", args, err, out)
		}
	}
	r.env = map[string]string{"FLEET_MQTT_URL": "tcp://broker.example.com:1883"}
	if _, err := r.run("cmd", "pi-1", "sensors"); !errors.Is(err, cmdline.ErrUsage) || !strings.Contains(err.Error(), "plaintext") {
		t.Errorf("plaintext to a remote host: %v", err)
	}
	// The passwords are read as the forwarder reads its own: the variable
	// or its _FILE, not both, and a file that can be read.
	missing, empty := filepath.Join(r.dir, "missing"), filepath.Join(r.dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"FLEET_PASSWORD": "pw", "FLEET_PASSWORD_FILE": empty}, []string{"cmd", "pi-1", "sensors"}, "not both"},
		{map[string]string{"FLEET_PASSWORD_FILE": missing}, []string{"cmd", "pi-1", "sensors"}, "FLEET_PASSWORD_FILE"},
		{map[string]string{"FLEET_PASSWORD_FILE": empty}, []string{"cmd", "pi-1", "sensors"}, "is empty"},
		{map[string]string{"FLEET_STATUS_USERNAME": "grafana", "FLEET_STATUS_PASSWORD_FILE": missing}, []string{"status"}, "FLEET_STATUS_PASSWORD_FILE"},
		{map[string]string{"FLEET_STATUS_USERNAME": "grafana", "FLEET_STATUS_PASSWORD": "pw", "FLEET_STATUS_PASSWORD_FILE": empty}, []string{"status"}, "not both"},
	} {
		r.env = map[string]string{"FLEET_MQTT_URL": "tcp://127.0.0.1:1", "FLEET_USERNAME": "ops"}
		for k, v := range tc.env {
			r.env[k] = v
		}
		if _, err := r.run(tc.args...); !errors.Is(err, cmdline.ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %q: %v, want a usage error with %q", tc.env, tc.args, err, tc.want)
		}
	}
}
