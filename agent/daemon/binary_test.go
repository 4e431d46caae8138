package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

var agentBin string

func TestMain(m *testing.M) {
	if bin := os.Getenv("BENCH_AGENT_BIN"); bin != "" { // another build, for an A/B comparison
		agentBin = bin
		os.Exit(m.Run())
	}
	testkit.Main(m, &agentBin, "github.com/edgepipe/sensorpipe/agent/cmd/edge-agent")
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunConfigErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		yaml string
		want string
	}{
		{"bad device_id", nil, "device_id: 'a/b'\nsensors: [{name: s, driver: sim}]\nmqtt: {url: 'tcp://127.0.0.1:1883'}\n", "device_id"},
		{"bad interval", nil, "device_id: a\nsensors: [{name: s, driver: sim, interval: 1ms}]\nmqtt: {url: 'tcp://127.0.0.1:1883'}\n", "sensors[0].interval"},
		{"plaintext remote", nil, "device_id: a\nsensors: [{name: s, driver: sim}]\nmqtt: {url: 'tcp://broker.example.com:1883'}\n", "mqtt.url"},
		{"unknown flag", []string{"--verbose"}, "", "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.yaml != "" {
				args = []string{"--config", writeConfig(t, dir, tc.yaml)}
			}
			cmd := exec.Command(agentBin, append([]string{"run"}, args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want 2; stderr: %s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr does not name %q: %s", tc.want, stderr.String())
			}
		})
	}
}

// notifySocket is a fake systemd notify socket collecting sd_notify states.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn") // short path: unix socket names are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) has(state string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if strings.Contains(m, state) {
			return true
		}
	}
	return false
}

// TestBinarySystemdLifecycle runs the real binary as systemd would:
// READY=1, watchdog pings, SIGHUP reload of sensors, SIGTERM within 5s with
// STOPPING=1, retained offline status, and nothing lost.
func TestBinarySystemdLifecycle(t *testing.T) {
	cnt := broker.NewCounter()
	br := broker.New(t, broker.Options{})
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	broker.NewConfirmer(t, br.URL()).Auto(t, cnt, "pi-bin", 100*time.Millisecond)
	dir := t.TempDir()
	db := filepath.Join(dir, "buffer.db")
	statusAddr := freePort(t)
	// clock: the test host's clock may never report synced (a container):
	// no hold for readings taken before NTP (that is TestReadingsBeforeSync...).
	base := fmt.Sprintf("device_id: pi-bin\nbuffer: {path: %s}\nmqtt: {url: %q, keepalive: 2s, delivery: kafka}\nclock: {hold_unsynced: 0s}\nstatus_listen: %s\nlog_format: json\nsensors:\n", db, br.URL(), statusAddr)
	cfgPath := writeConfig(t, dir, base+"  - {name: sim-1, driver: sim, interval: 20ms}\n")
	ns := newNotifySocket(t)

	cmd := exec.Command(agentBin, "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=200000")
	var stderr testkit.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	testkit.WaitFor(t, "READY=1", 10*time.Second, func() bool { return ns.has("READY=1") })
	testkit.WaitFor(t, "WATCHDOG=1", 2*time.Second, func() bool { return ns.has("WATCHDOG=1") })
	cnt.WaitUnique(t, "pi-bin", 20, 10*time.Second)
	if code, body := httpGet(t, "http://"+statusAddr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, body := httpGet(t, "http://"+statusAddr+"/buffer/stats"); code != 200 || !strings.Contains(body, `"last_seq"`) ||
		!strings.Contains(body, `"delivery":{"mode":"kafka"`) {
		t.Errorf("/buffer/stats = %d %s", code, body)
	}
	testkit.WaitFor(t, "confirmed readings", 5*time.Second, func() bool {
		_, m := httpGet(t, "http://"+statusAddr+"/metrics")
		return metricValue(m, "edge_agent_confirmed_total") > 0 && metricValue(m, "edge_agent_delivered_total") > 0 &&
			metricValue(m, "edge_agent_unconfirmed_readings") >= 0 && metricValue(m, `edge_agent_bad_confirmations_total{reason="unsent"}`) == 0
	})

	// This config predates mqtt.confirm_keys_file: run keeps it working (it
	// just confirmed readings), warns, and flags it in the heartbeat;
	// config check refuses it, naming the key.
	if !strings.Contains(stderr.String(), "accepting unsigned confirmations: this config predates mqtt.confirm_keys_file") {
		t.Errorf("no start-up warning about unsigned confirmations:\n%s", stderr.String())
	}
	if st := statusOf(t, br.Retained("sensors/pi-bin/status")); st.State != "online" || !st.ConfirmUnsigned {
		t.Errorf("retained status = %+v, want online with confirm_unsigned", st)
	}
	check := exec.Command(agentBin, "config", "check", "--config", cfgPath)
	out, err := check.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "mqtt.confirm_keys_file") {
		t.Errorf("config check of a config without keys: %v, want exit 2 naming mqtt.confirm_keys_file:\n%s", err, out)
	}

	// SIGHUP: a second sensor appears without a restart.
	writeConfig(t, dir, base+"  - {name: sim-1, driver: sim, interval: 20ms}\n  - {name: sim-hup, driver: sim, interval: 20ms}\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "RELOADING=1", 5*time.Second, func() bool { return ns.has("RELOADING=1") })
	testkit.WaitFor(t, "readings of the reloaded sensor", 5*time.Second, func() bool {
		_, m := httpGet(t, "http://"+statusAddr+"/metrics")
		return metricValue(m, `edge_agent_readings_total{sensor="sim-hup"}`) >= 5
	})

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v, want < 5s", d)
	} else {
		t.Logf("SIGTERM to exit: %v", d.Round(time.Millisecond))
	}
	if !ns.has("STOPPING=1") {
		t.Error("no STOPPING=1")
	}
	if got := statusOf(t, br.Retained("sensors/pi-bin/status")); got.State != "offline" || got.Delivery != string(mqttpub.DeliveryKafka) {
		t.Errorf("retained status = %+v, want offline, delivery kafka", got)
	}
	checkNothingLost(t, cnt, "pi-bin", db)
	if !strings.Contains(stderr.String(), `"msg":"reload: sensors reloaded"`) {
		t.Errorf("no reload log line:\n%s", stderr.String())
	}
}

// checkNothingLost: every seq ever assigned was either delivered or is
// still in the buffer.
func checkNothingLost(t *testing.T, cnt *broker.Counter, device, db string) {
	t.Helper()
	left, st, err := testkit.BufferedSeqs(db)
	if err != nil {
		t.Fatal(err)
	}
	cnt.From(device, st.SeqFloor)
	// The broker acknowledged everything not in the buffer; its delivery to
	// the subscriber may still be under way, so give it a few seconds.
	var missing []uint64
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := map[uint64]bool{}
		for _, s := range cnt.Seqs(device) {
			got[s] = true
		}
		missing = missing[:0]
		for s := st.SeqFloor + 1; s <= st.LastSeq; s++ {
			if !got[s] && !left[s] {
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	rep := cnt.Report(device)
	t.Logf("%s: last seq %d, delivered %d (+%d duplicates), still buffered %d", device, st.LastSeq, rep.Unique, rep.Duplicates, len(left))
	if len(missing) > 0 {
		t.Fatalf("%d readings lost, first %v", len(missing), missing[:min(10, len(missing))])
	}
}

// statusOf decodes a retained status message.
func statusOf(t *testing.T, payload string) heartbeat.Heartbeat {
	t.Helper()
	st, err := heartbeat.Decode([]byte(payload))
	if err != nil {
		t.Fatalf("status %q: %v", payload, err)
	}
	return st
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// metricValue returns the value of one series in a /metrics page, or -1.
func metricValue(page, series string) float64 {
	for _, l := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// tryGet is httpGet for a server that may not be up yet.
func tryGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBinaryBadCredentialsKeepsBuffering: wrong password from the env: the
// real binary stays up, says why in one clear line, backs off, keeps
// buffering, is healthy but not ready, and never prints the password.
func TestBinaryBadCredentialsKeepsBuffering(t *testing.T) {
	br := broker.New(t, broker.Options{Users: map[string]string{"pi-auth": "right-password"}})
	dir := t.TempDir()
	statusAddr := freePort(t)
	cfgPath := writeConfig(t, dir, fmt.Sprintf(`device_id: pi-auth
buffer: {path: %s}
mqtt: {url: %q, username: pi-auth}
clock: {hold_unsynced: 0s}
status_listen: %s
log_format: json
sensors: [{name: sim-1, driver: sim, interval: 50ms}]
`, filepath.Join(dir, "b.db"), br.URL(), statusAddr))
	cmd := exec.Command(agentBin, "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "EDGE_AGENT_MQTT_PASSWORD=wrong-password-42")
	var stderr testkit.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		t.Fatalf("agent exited with bad credentials: %v\n%s", err, stderr.String())
	case <-time.After(2500 * time.Millisecond):
	}
	if code, body := tryGet("http://" + statusAddr + "/healthz"); code != 200 {
		t.Errorf("/healthz = %d %s", code, body)
	}
	if code, body := tryGet("http://" + statusAddr + "/readyz"); code != 503 || !strings.Contains(body, "not connected") {
		t.Errorf("/readyz = %d %s; want 503 not connected", code, body)
	}
	_, m := tryGet("http://" + statusAddr + "/metrics")
	if n := metricValue(m, "edge_agent_buffer_readings"); n < 20 {
		t.Errorf("%v readings buffered after 2.5s at 20/s", n)
	}
	if n := metricValue(m, "edge_agent_mqtt_connect_errors_total"); n < 1 || n > 4 {
		t.Errorf("%v connect attempts in 2.5s; want backoff from 1s (1 to 4)", n)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	logs := stderr.String()
	if !strings.Contains(logs, `"msg":"mqtt connect failed; readings stay buffered"`) || !strings.Contains(logs, "check mqtt.username") {
		t.Errorf("no clear log line about the credentials:\n%s", logs)
	}
	if strings.Contains(logs, "wrong-password-42") {
		t.Fatal("the password is in the log")
	}
}

// TestConfigCheckRejectsNonPEMCA: `config check` used to pass a CA file
// that is not PEM, and `run` then exited 1 in a restart loop; now both
// exit 2 naming mqtt.ca_file, without printing the file (issue 11 item 12).
func TestConfigCheckRejectsNonPEMCA(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("hunter2-not-a-certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, fmt.Sprintf("device_id: a\nsensors: [{name: s, driver: sim}]\nbuffer: {path: %s}\nmqtt: {url: 'ssl://broker.example.com:8883', ca_file: %s}\n",
		filepath.Join(dir, "b.db"), ca))
	for _, args := range [][]string{{"config", "check", "--config", cfg}, {"run", "--config", cfg}} {
		cmd := exec.Command(agentBin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("%v: exit %v, want 2; stderr: %s", args, err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "mqtt.ca_file") || !strings.Contains(stderr.String(), "no PEM certificate") {
			t.Errorf("%v: stderr does not name mqtt.ca_file: %s", args, stderr.String())
		}
		if strings.Contains(stderr.String(), "hunter2") {
			t.Errorf("%v: the file's content is printed: %s", args, stderr.String())
		}
	}
}
