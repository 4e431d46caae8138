package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// parse builds a config like the file a user writes.
func parse(t *testing.T, y string, getenv func(string) string) *config.Config {
	t.Helper()
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	cfg, err := config.Parse([]byte(y), getenv)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// export reads every buffered reading through the status endpoint (the
// agent holds the file lock).
func export(t *testing.T, addr string) []reading.Reading {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/buffer/export")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/buffer/export: %s", resp.Status)
	}
	var out []reading.Reading
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		r, err := reading.Decode(sc.Bytes())
		if err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

type agentRun struct {
	addr   chan string
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t *testing.T, cfg *config.Config, o daemon.Options) (*agentRun, string) {
	t.Helper()
	r := &agentRun{addr: make(chan string, 1), done: make(chan error, 1)}
	o.Listening = func(a string) { r.addr <- a }
	if o.Notify == nil {
		o.Notify = func(string) {}
	}
	if o.Clock == nil {
		// The test host's kernel may never report its clock synced (a
		// container): readings would wait clock.hold_unsynced for NTP.
		// Tests about the clock drive it themselves.
		o.Clock = clock.Always(true)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- daemon.Agent(ctx, cfg, o) }()
	t.Cleanup(func() { r.stop(t) })
	select {
	case a := <-r.addr:
		return r, a
	case err := <-r.done:
		t.Fatalf("agent ended at start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not start")
	}
	return nil, ""
}

func (r *agentRun) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("agent: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not stop within 5s")
	}
}

// TestClockSyncCorrectsBufferedTimestamps: a Pi boots a week behind; the
// broker is unreachable so readings stay buffered; then NTP steps the
// clock. This run's readings get the true time; an unsynced reading left by
// an earlier run (whose monotonic reference is gone) is left as it was.
func TestClockSyncCorrectsBufferedTimestamps(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "buffer.db")
	old := &reading.Reading{DeviceID: "pi-1", Sensor: "sim-1", Kind: "sim",
		TS: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Values: map[string]float64{reading.Temperature: 1}}
	b, err := buffer.Open(dbPath, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	b.Close()

	const behind = 7 * 24 * time.Hour
	var step atomic.Int64
	step.Store(int64(-behind))
	var synced atomic.Bool
	start := time.Now()
	cfg := parse(t, fmt.Sprintf(`device_id: pi-1
sensors: [{name: sim-1, driver: sim, interval: 50ms}]
buffer: {path: %s}
mqtt: {url: "tcp://127.0.0.1:1"}
status_listen: 127.0.0.1:0
`, dbPath), nil)
	_, addr := startAgent(t, cfg, daemon.Options{
		Clock:           sourceFunc(func() (bool, error) { return synced.Load(), nil }),
		ClockCheckEvery: 50 * time.Millisecond,
		ClockOptions: []clock.Option{clock.WithTime(
			func() time.Time { return time.Now().Round(0).Add(time.Duration(step.Load())) },
			func() time.Duration { return time.Since(start) },
		)},
	})
	time.Sleep(500 * time.Millisecond)
	before := export(t, addr)
	if len(before) < 5 {
		t.Fatalf("%d readings buffered", len(before))
	}
	for _, r := range before[1:] {
		if r.TimeSynced || time.Since(r.TS) < behind-time.Minute {
			t.Fatalf("reading before sync: ts %v synced %v; want a week behind, unsynced", r.TS, r.TimeSynced)
		}
	}
	// NTP steps the clock forward a week and the kernel reports sync.
	step.Store(0)
	synced.Store(true)
	time.Sleep(400 * time.Millisecond)
	after := export(t, addr)
	bySeq := map[uint64]reading.Reading{}
	for _, r := range after {
		bySeq[r.Seq] = r
	}
	if r := bySeq[before[0].Seq]; r.TimeSynced || !r.TS.Equal(old.TS) {
		t.Errorf("the earlier run's reading was changed: %+v", r)
	}
	for _, r0 := range before[1:] {
		r := bySeq[r0.Seq]
		if !r.TimeSynced {
			t.Fatalf("seq %d still unsynced after the clock synced", r0.Seq)
		}
		if d := r.TS.Sub(r0.TS) - behind; d < -5*time.Millisecond || d > 5*time.Millisecond {
			t.Fatalf("seq %d moved by %v, want %v", r0.Seq, r.TS.Sub(r0.TS), behind)
		}
		if age := time.Since(r.TS); age < 0 || age > 5*time.Second {
			t.Fatalf("seq %d corrected to %v, not a few ms ago", r0.Seq, r.TS)
		}
	}
	if last := after[len(after)-1]; !last.TimeSynced || time.Since(last.TS) > time.Second {
		t.Fatalf("reading after sync: %+v", last)
	}
}

type sourceFunc func() (bool, error)

func (f sourceFunc) Synced() (bool, error) { return f() }

// TestMosquittoTLSPassword runs the agent against Debian's mosquitto with
// TLS and a password file, the way HiveMQ Cloud is configured.
func TestMosquittoTLSPassword(t *testing.T) {
	ca := pki.New(t)
	mq := broker.StartMosquitto(t, broker.MosquittoConfig{PKI: ca, Users: map[string]string{"pi-1": "agent-secret-123", "counter": "counter-pw"}})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: mq.URL(), TLS: ca.Client(), Username: "counter", Password: "counter-pw"})
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "mqtt-password")
	if err := os.WriteFile(pwFile, []byte("agent-secret-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testkit.LogBuffer
	cfg := parse(t, fmt.Sprintf(`device_id: pi-1
sensors:
  - {name: sim-1, driver: sim, interval: 20ms}
  - {name: sim-2, driver: sim, interval: 30ms}
buffer: {path: %s}
mqtt: {url: %q, username: pi-1, password_file: %s, ca_file: %s}
status_listen: 127.0.0.1:0
log_level: debug
`, filepath.Join(dir, "b.db"), mq.URL(), pwFile, ca.CAFile), nil)
	run, addr := startAgent(t, cfg, daemon.Options{Logger: cmdline.NewLogger(&logs, "json", slog.LevelDebug), Clock: clock.Always(true)})
	cnt.WaitUnique(t, "pi-1", 40, 20*time.Second)
	code, body := httpGet(t, "http://"+addr+"/readyz")
	if code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	_, metrics := httpGet(t, "http://"+addr+"/metrics")
	if !strings.Contains(metrics, "edge_agent_mqtt_connected 1") {
		t.Error("metrics do not say connected")
	}
	run.stop(t)
	rep := cnt.Report("pi-1")
	if len(rep.Bad) > 0 {
		t.Fatalf("bad messages: %v", rep.Bad)
	}
	if strings.Contains(logs.String(), "agent-secret-123") {
		t.Fatal("the password appears in the debug log")
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&sb)
	return resp.StatusCode, sb.String()
}

// TestCannotStoreIsUnhealthy: while the buffer refuses appends (a full
// disk), /healthz says "cannot store", the failures are counted as store
// errors and not as the sensor's, and the log stays quiet; when space
// comes back the agent is healthy again (issue 11 item 6).
func TestCannotStoreIsUnhealthy(t *testing.T) {
	dir := t.TempDir()
	var full atomic.Bool
	full.Store(true)
	var logs testkit.LogBuffer
	cfg := parse(t, fmt.Sprintf(`device_id: pi-1
sensors: [{name: sim-1, driver: sim, interval: 20ms}, {name: sim-2, driver: sim, interval: 20ms}]
buffer: {path: %s}
mqtt: {url: "tcp://127.0.0.1:1"}
status_listen: 127.0.0.1:0
`, filepath.Join(dir, "buffer.db")), nil)
	o := daemon.Options{Logger: cmdline.NewLogger(&logs, "text", slog.LevelInfo)}
	daemon.WithAppendFault(&o, func() error {
		if full.Load() {
			return fmt.Errorf("write buffer.db.wal: %w: %w", buffer.ErrNoSpace, syscall.ENOSPC)
		}
		return nil
	})
	_, addr := startAgent(t, cfg, o)
	testkit.WaitFor(t, "/healthz to say it cannot store", 5*time.Second, func() bool {
		code, body := httpGet(t, "http://"+addr+"/healthz")
		return code == 503 && strings.Contains(body, "cannot store readings: the disk is full (free space under "+dir+")") &&
			strings.Contains(body, "no space left on device")
	})
	time.Sleep(time.Second) // about 100 failed appends
	_, m := httpGet(t, "http://"+addr+"/metrics")
	if n := metricValue(m, "edge_agent_buffer_append_errors_total"); n < 50 {
		t.Errorf("append errors = %v after a second of a full disk at 100 readings/s", n)
	}
	for _, s := range []string{"sim-1", "sim-2"} {
		for _, c := range fault.Classes() {
			if n := metricValue(m, `edge_agent_sensor_errors_total{class="`+string(c)+`",sensor="`+s+`"}`); n != 0 {
				t.Errorf("%s: %v sensor errors of class %s for a full disk (-1: no series)", s, n, c)
			}
		}
	}
	if n := strings.Count(logs.String(), "level=WARN") + strings.Count(logs.String(), "level=ERROR"); n > 4 {
		t.Errorf("%d warning/error lines in about a second of a full disk; want a handful:\n%s", n, logs.String())
	}
	full.Store(false)
	testkit.WaitFor(t, "/healthz to recover", 5*time.Second, func() bool {
		code, _ := httpGet(t, "http://"+addr+"/healthz")
		return code == 200
	})
}

// TestStartWarnsAboutExposure: a status endpoint on every interface,
// plaintext MQTT to another host and a world-readable password file each
// get a warning at start (issue 11 items 11 and 14); the safe defaults get
// none.
func TestStartWarnsAboutExposure(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "mqtt-password")
	if err := os.WriteFile(pw, []byte("secret-pw-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pw, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	safePW := filepath.Join(dir, "safe-password")
	if err := os.WriteFile(safePW, []byte("secret-pw-2\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, mqtt, listen string
		want               []string
	}{
		{"exposed", fmt.Sprintf(`{url: "tcp://192.0.2.1:1883", insecure: true, username: pi-1, password_file: %s}`, pw), "0.0.0.0:0",
			[]string{"status_listen is reachable from other machines", "mqtt.url is plaintext to another host", "mqtt.password_file is readable by every user", "mode=0644"}},
		{"safe", fmt.Sprintf(`{url: "tcp://127.0.0.1:1", username: pi-1, password_file: %s}`, safePW), "127.0.0.1:0", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testkit.LogBuffer
			cfg := parse(t, fmt.Sprintf("device_id: pi-1\nsensors: [{name: sim-1, driver: sim, interval: 1s}]\nbuffer: {path: %s}\nmqtt: %s\nstatus_listen: %s\n",
				filepath.Join(t.TempDir(), "b.db"), tc.mqtt, tc.listen), nil)
			run, _ := startAgent(t, cfg, daemon.Options{Logger: cmdline.NewLogger(&logs, "text", slog.LevelInfo)})
			run.stop(t)
			out := logs.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("no %q at start:\n%s", w, out)
				}
			}
			for _, w := range []string{"reachable from other machines", "plaintext to another host", "readable by every user"} {
				if tc.want == nil && strings.Contains(out, w) {
					t.Errorf("warning %q for a safe config:\n%s", w, out)
				}
			}
			if strings.Contains(out, "secret-pw") {
				t.Fatal("the password is in the log")
			}
		})
	}
}
