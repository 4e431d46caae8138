package daemon_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// fleetRig is a broker that records every reading and command result, an
// operator client with the fleet key, and an agent config trusting it.
type fleetRig struct {
	t   *testing.T
	br  *broker.Broker
	key *sign.Signer
	op  mqtt.Client
	dir string

	mu       sync.Mutex
	readings map[uint64][]reading.Reading // by seq: more than one is a duplicate
	results  map[string]remote.Result
	status   []byte // the last status (heartbeat) message
	changed  chan struct{}
}

func newFleetRig(t *testing.T) *fleetRig {
	t.Helper()
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	r := &fleetRig{t: t, key: key, dir: t.TempDir(), readings: map[uint64][]reading.Reading{},
		results: map[string]remote.Result{}, changed: make(chan struct{}, 1)}
	r.br = broker.New(t, broker.Options{Inline: r.inline})
	if err := os.WriteFile(filepath.Join(r.dir, "fleet-keys.pem"), key.PublicPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	o := mqtt.NewClientOptions().AddBroker(r.br.URL()).SetClientID("operator").SetCleanSession(true)
	r.op = mqtt.NewClient(o)
	if tok := r.op.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("operator connect: %v", tok.Error())
	}
	t.Cleanup(func() { r.op.Disconnect(100) })
	return r
}

func (r *fleetRig) inline(topic string, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case strings.HasSuffix(topic, "/reading"):
		rd, err := reading.Decode(payload)
		if err != nil {
			r.t.Errorf("reading on %s: %v", topic, err)
			return
		}
		r.readings[rd.Seq] = append(r.readings[rd.Seq], rd)
	case strings.HasSuffix(topic, "/status"):
		r.status = append([]byte(nil), payload...)
	case strings.HasSuffix(topic, "/result"):
		var res remote.Result
		if err := json.Unmarshal(payload, &res); err != nil {
			r.t.Errorf("result on %s: %v", topic, err)
			return
		}
		r.results[res.ID] = res
	}
}

func (r *fleetRig) config(extra string) *config.Config {
	r.t.Helper()
	return parse(r.t, fmt.Sprintf(`device_id: pi-1
sensors:
  - {name: sim-1, driver: sim, interval: 100ms}
buffer: {path: %s}
mqtt: {url: %q, delivery: broker}
status_listen: 127.0.0.1:0
fleet: {keys_file: %s, group: g1, grace: 1s}
%s`, filepath.Join(r.dir, "buffer.db"), r.br.URL(), filepath.Join(r.dir, "fleet-keys.pem"), extra), nil)
}

// push publishes a signed document, retained, as `cloud-forwarder fleet
// config push` does.
func (r *fleetRig) push(s remote.Signer, l remote.Level, target string, version uint64, cfg map[string]any) {
	r.t.Helper()
	p, err := remote.SignConfig(remote.Doc{Level: l, Target: target, Version: version, Issued: time.Now(), Config: cfg}, s)
	if err != nil {
		r.t.Fatal(err)
	}
	r.publish("push", remote.ConfigTopic("sensors", l, target), true, p)
}

// publish publishes p at QoS 1 as the operator and waits for the broker's
// acknowledgement.
func (r *fleetRig) publish(what, topic string, retained bool, p []byte) {
	r.t.Helper()
	if tok := r.op.Publish(topic, 1, retained, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		r.t.Fatalf("%s: %v", what, tok.Error())
	}
}

func (r *fleetRig) command(id, name string, issued time.Time, life time.Duration) []byte {
	r.t.Helper()
	p, err := remote.SignCommand(remote.Command{ID: id, Device: "pi-1", Name: name, Issued: issued, Expires: issued.Add(life)}, r.key)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *fleetRig) send(p []byte) {
	r.t.Helper()
	r.publish("send command", remote.CommandTopic("sensors", "pi-1"), false, p)
}

func (r *fleetRig) result(id string) remote.Result {
	r.t.Helper()
	var res remote.Result
	testkit.WaitFor(r.t, "result of command "+id, 10*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		var ok bool
		res, ok = r.results[id]
		return ok
	})
	return res
}

// waitHeartbeat waits for a heartbeat whose "config" satisfies cond.
func (r *fleetRig) waitHeartbeat(what string, cond func(c heartbeatConfig) bool) heartbeatConfig {
	r.t.Helper()
	var c heartbeatConfig
	testkit.WaitFor(r.t, "heartbeat: "+what, 20*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		var hb struct{ Config heartbeatConfig }
		if json.Unmarshal(r.status, &hb) != nil {
			return false
		}
		c = hb.Config
		return cond(c)
	})
	return c
}

type heartbeatConfig struct{ Version, Source, State, Error string }

func fleetReport(t *testing.T, addr string) remote.Report {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/fleet")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep remote.Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func waitReport(t *testing.T, addr, what string, cond func(remote.Report) bool) remote.Report {
	t.Helper()
	var rep remote.Report
	testkit.WaitFor(t, what, 20*time.Second, func() bool { rep = fleetReport(t, addr); return cond(rep) })
	return rep
}

// since returns how many readings were taken at or after t, and the mean
// gap between their timestamps (the poller's aligned schedule keeps the
// mean at the interval when a loaded machine delays single reads).
func (r *fleetRig) since(t time.Time) (n int, gap time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ts []time.Time
	for _, rs := range r.readings {
		if !rs[0].TS.Before(t) {
			ts = append(ts, rs[0].TS)
		}
	}
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	if len(ts) < 2 {
		return len(ts), 0
	}
	return len(ts), ts[len(ts)-1].Sub(ts[0]) / time.Duration(len(ts)-1)
}

// checkNoLossNoDup checks, after the agent stopped, that every seq from
// the first published to the buffer's last was published exactly once or
// is still in the buffer.
func (r *fleetRig) checkNoLossNoDup(path string) {
	r.t.Helper()
	left, st, err := testkit.BufferedSeqs(path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	first := st.LastSeq
	for s := range r.readings {
		first = min(first, s)
	}
	var lost, dup []uint64
	for s := first; s <= st.LastSeq; s++ {
		n := len(r.readings[s])
		if n > 1 {
			dup = append(dup, s)
		}
		if n == 0 && !left[s] {
			lost = append(lost, s)
		}
	}
	if len(lost) > 0 || len(dup) > 0 || st.LastSeq-first < 3 {
		r.t.Fatalf("seqs %d..%d: lost %v, duplicated %v", first, st.LastSeq, lost, dup)
	}
	r.t.Logf("seqs %d..%d: %d published once, %d still buffered, 0 lost, 0 duplicated", first, st.LastSeq, len(r.readings), len(left))
}

// TestFleetConfigInPlace: a forged document is refused and reported; a
// signed fleet document changes the interval without a restart; the
// readings' rate follows; no reading is lost or duplicated across the
// change, counted by (device_id, seq).
func TestFleetConfigInPlace(t *testing.T) {
	r := newFleetRig(t)
	cfg := r.config("")
	hup := make(chan os.Signal, 1)
	run, addr := startAgent(t, cfg, daemon.Options{Reload: hup})
	testkit.WaitFor(t, "readings at 100ms", 10*time.Second, func() bool { n, _ := r.since(time.Time{}); return n >= 5 })

	confirmKey, _ := sign.Generate() // say, a forwarder's confirmation key
	r.push(confirmKey, remote.LevelDevice, "pi-1", 1, map[string]any{"sensor_interval": "10ms"})
	rep := waitReport(t, addr, "forged document refused", func(r remote.Report) bool { return r.State == remote.StateRefused })
	if !strings.Contains(rep.Error, "signature") || rep.Version != "0.0.0" {
		t.Fatalf("report %+v", rep)
	}
	r.waitHeartbeat("reports the refusal", func(c heartbeatConfig) bool {
		return c.Source == "file" && c.State == remote.StateRefused && strings.Contains(c.Error, "signature")
	})

	r.push(r.key, remote.LevelFleet, "", 1, map[string]any{"sensor_interval": "300ms"})
	rep = waitReport(t, addr, "fleet version 1 applied and working", func(r remote.Report) bool {
		return r.Version == "1.0.0" && r.State == remote.StateOK
	})
	if rep.Source != "remote" {
		t.Fatalf("report %+v", rep)
	}
	r.waitHeartbeat("carries fleet version 1", func(c heartbeatConfig) bool {
		return c.Version == "1.0.0" && c.Source == "remote" && c.State == remote.StateOK
	})
	changed := time.Now()
	testkit.WaitFor(t, "readings at the new interval", 10*time.Second, func() bool { n, _ := r.since(changed); return n >= 4 })
	if _, gap := r.since(changed); gap < 250*time.Millisecond {
		t.Fatalf("readings %v apart on average after the change to 300ms", gap)
	}
	// SIGHUP re-reads the file; it must not undo the remote interval.
	hup <- syscall.SIGHUP
	reloaded := time.Now()
	testkit.WaitFor(t, "readings after SIGHUP", 10*time.Second, func() bool { n, _ := r.since(reloaded); return n >= 4 })
	if _, gap := r.since(reloaded); gap < 250*time.Millisecond {
		t.Fatalf("readings %v apart on average after SIGHUP: the file's interval replaced the remote one", gap)
	}
	select {
	case err := <-run.done:
		t.Fatalf("the agent stopped (%v): an interval change must not restart it", err)
		run.done <- nil
	default:
	}
	run.stop(t)
	r.checkNoLossNoDup(cfg.Buffer.Path)
}

// TestFleetBrokenSensorsRollBack: a document that validates but whose
// sensor cannot be opened is rolled back within the grace period, the
// reason is reported, and the old sensors read again.
func TestFleetBrokenSensorsRollBack(t *testing.T) {
	r := newFleetRig(t)
	cfg := r.config("")
	run, addr := startAgent(t, cfg, daemon.Options{})
	r.push(r.key, remote.LevelGroup, "g1", 1, map[string]any{"sensor_interval": "200ms"})
	waitReport(t, addr, "group version 1 working", func(r remote.Report) bool { return r.Version == "0.1.0" && r.State == remote.StateOK })

	r.push(r.key, remote.LevelDevice, "pi-1", 1, map[string]any{"sensors": []any{
		map[string]any{"name": "bme", "driver": "bme280", "bus": "99", "interval": "100ms"}}})
	applied := time.Now()
	rep := waitReport(t, addr, "rollback", func(r remote.Report) bool { return r.State == remote.StateRolledBack })
	if took := time.Since(applied); took > cfg.Fleet.Grace+5*time.Second {
		t.Errorf("rolled back after %v; grace %v", took, cfg.Fleet.Grace)
	}
	if rep.Version != "0.1.0" || !strings.Contains(rep.Error, "bme") {
		t.Fatalf("report %+v", rep)
	}
	r.waitHeartbeat("reports the rollback and why", func(c heartbeatConfig) bool {
		return c.Version == "0.1.0" && c.State == remote.StateRolledBack && strings.Contains(c.Error, "bme")
	})
	back := time.Now()
	testkit.WaitFor(t, "sim-1 reading again", 10*time.Second, func() bool { n, _ := r.since(back); return n >= 3 })
	run.stop(t)
	r.checkNoLossNoDup(cfg.Buffer.Path)
}

// TestFleetRestartWithoutNetwork: a change the agent applies by
// restarting makes it stop cleanly; started again with the broker gone,
// it runs the applied config from its state directory.
func TestFleetRestartWithoutNetwork(t *testing.T) {
	r := newFleetRig(t)
	cfg := r.config("")
	run, addr := startAgent(t, cfg, daemon.Options{})
	r.push(r.key, remote.LevelDevice, "pi-1", 3, map[string]any{"buffer": map[string]any{"max_age": "48h"}, "sensor_interval": "50ms"})
	select {
	case err := <-run.done:
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
		close(run.done)
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop to restart")
	}
	_ = addr
	r.br.Stop()

	_, addr = startAgent(t, cfg, daemon.Options{})
	rep := waitReport(t, addr, "applied config kept without network", func(r remote.Report) bool {
		return r.Version == "0.0.3" && r.State == remote.StateOK
	})
	if rep.Source != "remote" {
		t.Fatalf("report %+v", rep)
	}
}

// TestFleetCommands: results come back with the command's id; a replayed
// and an expired command are refused, and so is one signed by another key.
func TestFleetCommands(t *testing.T) {
	r := newFleetRig(t)
	cfg := r.config("")
	_, _ = startAgent(t, cfg, daemon.Options{})
	testkit.WaitFor(t, "readings", 10*time.Second, func() bool { n, _ := r.since(time.Time{}); return n >= 3 })
	now := time.Now()
	stats := r.command("c-stats", remote.CmdBufferStats, now, time.Minute)
	r.send(r.command("c-sensors", remote.CmdSensors, now, time.Minute))
	r.send(stats)
	r.send(r.command("c-resend", remote.CmdResend, now, time.Minute))

	res := r.result("c-sensors")
	var sensors []struct {
		Name   string
		OK     bool
		Values map[string]float64
	}
	if err := json.Unmarshal(res.Result, &sensors); err != nil || !res.OK || len(sensors) != 1 || !sensors[0].OK || len(sensors[0].Values) == 0 {
		t.Fatalf("sensors: %+v (%s) %v", res, res.Result, err)
	}
	res = r.result("c-stats")
	var bs struct {
		Buffer struct {
			LastSeq uint64 `json:"last_seq"`
		}
	}
	if err := json.Unmarshal(res.Result, &bs); err != nil || !res.OK || res.Name != remote.CmdBufferStats || bs.Buffer.LastSeq == 0 {
		t.Fatalf("buffer-stats: %+v (%s) %v", res, res.Result, err)
	}
	if res := r.result("c-resend"); res.OK || !strings.Contains(res.Error, "broker") {
		t.Fatalf("resend in broker mode: %+v", res)
	}

	r.mu.Lock()
	delete(r.results, "c-stats")
	r.mu.Unlock()
	r.send(stats)
	if res := r.result("c-stats"); res.OK || !strings.Contains(res.Error, "already seen") {
		t.Fatalf("replayed: %+v", res)
	}
	r.send(r.command("c-old", remote.CmdBufferStats, now.Add(-time.Hour), time.Minute))
	if res := r.result("c-old"); res.OK || !strings.Contains(res.Error, "expired") {
		t.Fatalf("expired: %+v", res)
	}
	other, _ := sign.Generate()
	forged, _ := remote.SignCommand(remote.Command{ID: "c-forged", Device: "pi-1", Name: remote.CmdRestart, Issued: now, Expires: now.Add(time.Minute)}, other)
	r.send(forged)
	if res := r.result("c-forged"); res.OK || !strings.Contains(res.Error, "signature") {
		t.Fatalf("forged: %+v", res)
	}
}

// TestFleetRestartCommand: `restart` answers with its id, then the agent
// stops cleanly (exit 0; systemd starts it again) with nothing lost.
func TestFleetRestartCommand(t *testing.T) {
	r := newFleetRig(t)
	cfg := r.config("")
	run, _ := startAgent(t, cfg, daemon.Options{})
	testkit.WaitFor(t, "readings", 10*time.Second, func() bool { n, _ := r.since(time.Time{}); return n >= 5 })
	r.send(r.command("r-1", remote.CmdRestart, time.Now(), time.Minute))
	if res := r.result("r-1"); !res.OK || res.Name != remote.CmdRestart {
		t.Fatalf("result %+v", res)
	}
	select {
	case err := <-run.done:
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
		close(run.done)
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop to restart")
	}
	r.checkNoLossNoDup(cfg.Buffer.Path)
}
