package remote_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/remote"
)

type harness struct {
	t      *testing.T
	key    *key
	local  *config.Config
	dir    string
	m      *remote.Manager
	start  *config.Config
	ap     *applier
	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, k *key, local *config.Config, dir string) *harness {
	t.Helper()
	m, start, err := remote.New(remote.Options{Local: local, Verifier: k.Verifier(), StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, key: k, local: local, dir: dir, m: m, start: start, ap: newApplier()}
}

// run starts Run; stop ends it and returns its error.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.m.Run(ctx, h.ap) }()
}

func (h *harness) stop() error {
	h.cancel()
	return <-h.done
}

// offer hands a document to the manager and waits (synctest) until it is
// handled.
func (h *harness) offer(l remote.Level, target string, version uint64, cfg map[string]any) {
	h.t.Helper()
	h.m.Offer(l, doc(h.t, h.key, l, target, version, cfg))
	synctest.Wait()
}

func (h *harness) applied() *config.Config {
	h.t.Helper()
	select {
	case c := <-h.ap.notify:
		return c
	default:
		h.t.Fatal("nothing applied")
		return nil
	}
}

func (h *harness) noneApplied() {
	h.t.Helper()
	select {
	case c := <-h.ap.notify:
		h.t.Fatalf("applied %+v, want nothing", c.Sensors)
	default:
	}
}

func TestManagerLayersAndReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, newKey(t), localConfig(t), t.TempDir())
		if r := h.m.Report(); r.Source != "file" || r.Version != "0.0.0" || r.State != remote.StateOK {
			t.Fatalf("report before any document: %+v", r)
		}
		h.run()
		h.offer(remote.LevelFleet, "", 4, map[string]any{"sensor_interval": "5s", "log_level": "debug"})
		if c := h.applied(); c.Sensors[0].Interval != 5*time.Second || c.Sensors[1].Interval != 5*time.Second {
			t.Fatalf("fleet level: %+v", c.Sensors)
		}
		h.offer(remote.LevelGroup, "greenhouses", 2, map[string]any{"sensor_intervals": map[string]any{"sim-2": "3s"}})
		h.offer(remote.LevelDevice, "pi-1", 1, map[string]any{"log_level": "warn"})
		h.applied()
		c := h.applied()
		if c.Sensors[0].Interval != 5*time.Second || c.Sensors[1].Interval != 3*time.Second || c.LogLevel.String() != "WARN" {
			t.Fatalf("layered: %v %v %v", c.Sensors[0].Interval, c.Sensors[1].Interval, c.LogLevel)
		}
		if r := h.m.Report(); r.Source != "remote" || r.Version != "4.2.1" {
			t.Fatalf("report: %+v", r)
		}
		time.Sleep(2 * time.Second) // fake time: the grace check sees readings stored
		synctest.Wait()
		if r := h.m.Report(); r.State != remote.StateOK {
			t.Fatalf("after readings were stored: %+v", r)
		}
		if err := h.stop(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestManagerRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		h := newHarness(t, k, localConfig(t), t.TempDir())
		h.run()
		defer h.stop()
		h.offer(remote.LevelFleet, "", 5, map[string]any{"sensor_interval": "5s"})
		h.applied()

		refused := func(why string, want error, payload []byte, l remote.Level) {
			t.Helper()
			h.m.Offer(l, payload)
			synctest.Wait()
			h.noneApplied()
			r := h.m.Report()
			if r.State != remote.StateRefused || r.Version != "5.0.0" || !strings.Contains(r.Error, want.Error()) {
				t.Fatalf("%s: report %+v, want refused with %q", why, r, want)
			}
		}
		refused("older version", remote.ErrOldVersion, doc(t, k, remote.LevelFleet, "", 4, map[string]any{"sensor_interval": "1s"}), remote.LevelFleet)
		refused("same version, other content", remote.ErrOldVersion, doc(t, k, remote.LevelFleet, "", 5, map[string]any{"sensor_interval": "1s"}), remote.LevelFleet)
		refused("wrong key", remote.ErrSignature, doc(t, newKey(t), remote.LevelFleet, "", 6, map[string]any{"sensor_interval": "1s"}), remote.LevelFleet)
		refused("unsigned", remote.ErrSignature, []byte(`{"v":1,"doc":{"level":"fleet","version":7,"config":{}}}`), remote.LevelFleet)
		refused("confirmation key purpose", remote.ErrSignature, doc(t, purposeSigner{k, "sensorpipe confirm v2"}, remote.LevelFleet, "", 6, nil), remote.LevelFleet)
		refused("another device's document", remote.ErrTarget, doc(t, k, remote.LevelDevice, "pi-2", 1, nil), remote.LevelDevice)
		refused("another group's document", remote.ErrTarget, doc(t, k, remote.LevelGroup, "barns", 1, nil), remote.LevelGroup)
		refused("device document on the fleet topic", remote.ErrTarget, doc(t, k, remote.LevelDevice, "pi-1", 9, nil), remote.LevelFleet)
		refused("local key", remote.ErrLocalKey, doc(t, k, remote.LevelFleet, "", 6, map[string]any{"mqtt": map[string]any{"url": "tcp://evil:1883"}}), remote.LevelFleet)
		refused("fails validation", remote.ErrInvalid, doc(t, k, remote.LevelFleet, "", 7, map[string]any{"sensor_interval": "1ms"}), remote.LevelFleet)

		// The retained copy of what is in force, delivered again, is no change.
		h.m.Offer(remote.LevelFleet, nil)
		synctest.Wait()
		h.noneApplied()
		// A newer valid version is applied after all that.
		h.offer(remote.LevelFleet, "", 8, map[string]any{"sensor_interval": "2s"})
		if c := h.applied(); c.Sensors[0].Interval != 2*time.Second {
			t.Fatalf("v8: %+v", c.Sensors)
		}
	})
}

func TestManagerRetainedRedeliveryIsNoChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		h := newHarness(t, k, localConfig(t), t.TempDir())
		h.run()
		defer h.stop()
		p := doc(t, k, remote.LevelFleet, "", 1, map[string]any{"sensor_interval": "5s"})
		h.m.Offer(remote.LevelFleet, p)
		synctest.Wait()
		h.applied()
		h.m.Offer(remote.LevelFleet, p)
		synctest.Wait()
		h.noneApplied()
		if r := h.m.Report(); r.State == remote.StateRefused {
			t.Fatalf("redelivery reported as refused: %+v", r)
		}
	})
}

// TestManagerInvalidKeepsOld: a document that fails validation is
// reported, the config in force stays, and the same retained document
// delivered again (a reconnect) is not tried again.
func TestManagerInvalidKeepsOld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		dir := t.TempDir()
		h := newHarness(t, k, localConfig(t), dir)
		h.run()
		h.offer(remote.LevelDevice, "pi-1", 1, map[string]any{"sensor_interval": "4s"})
		h.applied()
		bad := doc(t, k, remote.LevelDevice, "pi-1", 2, map[string]any{"sensors": []any{map[string]any{"name": "x", "driver": "bme280", "address": 0x99}}})
		h.m.Offer(remote.LevelDevice, bad)
		synctest.Wait()
		h.noneApplied()
		r := h.m.Report()
		if r.State != remote.StateRefused || r.Version != "0.0.1" || !strings.Contains(r.Error, "device version 2") {
			t.Fatalf("report %+v", r)
		}
		h.stop()
		// After a restart the old config is still the one in force.
		h2 := newHarness(t, k, h.local, dir)
		if h2.start.Sensors[0].Interval != 4*time.Second {
			t.Fatalf("after restart: %+v", h2.start.Sensors)
		}
		h2.run()
		defer h2.stop()
		h2.m.Offer(remote.LevelDevice, bad)
		synctest.Wait()
		h2.noneApplied()
	})
}

// TestManagerRollsBack: a config that validates but stores no reading is
// replaced by the last one that worked at the end of the grace period, the
// reason is reported, and the retained document is not applied again.
func TestManagerRollsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		h := newHarness(t, k, localConfig(t), t.TempDir())
		h.run()
		defer h.stop()
		h.offer(remote.LevelFleet, "", 1, map[string]any{"sensor_interval": "5s"})
		h.applied()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if r := h.m.Report(); r.State != remote.StateOK {
			t.Fatalf("v1 did not prove itself: %+v", r)
		}
		h.ap.mu.Lock()
		h.ap.stored = func(time.Time) error { return errors.New("no sensor read: sensor x: open: no such bus") }
		h.ap.mu.Unlock()
		broken := doc(t, k, remote.LevelFleet, "", 2, map[string]any{"sensors": []any{map[string]any{"name": "x", "driver": "bme280", "bus": "99"}}})
		h.m.Offer(remote.LevelFleet, broken)
		synctest.Wait()
		if c := h.applied(); c.Sensors[0].Name != "x" {
			t.Fatalf("v2 not applied: %+v", c.Sensors)
		}
		applied := time.Now()
		if r := h.m.Report(); r.State != remote.StateTrial || r.Version != "2.0.0" {
			t.Fatalf("during the trial: %+v", r)
		}
		time.Sleep(h.local.Fleet.Grace - time.Second)
		synctest.Wait()
		h.noneApplied()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		c := h.applied()
		if took := time.Since(applied); took > h.local.Fleet.Grace+2*time.Second {
			t.Errorf("rolled back after %v, grace %v", took, h.local.Fleet.Grace)
		}
		if c.Sensors[0].Name != "sim-1" || c.Sensors[0].Interval != 5*time.Second {
			t.Fatalf("rolled back to %+v, want v1's sensors", c.Sensors)
		}
		r := h.m.Report()
		if r.State != remote.StateRolledBack || r.Version != "1.0.0" || !strings.Contains(r.Error, "no sensor read") {
			t.Fatalf("report %+v", r)
		}
		h.m.Offer(remote.LevelFleet, broken) // the retained copy, at the next connect
		synctest.Wait()
		h.noneApplied()
	})
}

// TestManagerRestartWithoutNetwork: a restart with no broker in reach
// starts with the config that was applied, from the state directory.
func TestManagerRestartWithoutNetwork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		dir := t.TempDir()
		h := newHarness(t, k, localConfig(t), dir)
		h.run()
		h.offer(remote.LevelFleet, "", 3, map[string]any{"sensor_interval": "7s"})
		h.offer(remote.LevelGroup, "greenhouses", 1, map[string]any{"buffer": map[string]any{"max_age": "24h"}})
		time.Sleep(2 * time.Second)
		synctest.Wait()
		h.stop()

		h2 := newHarness(t, k, h.local, dir)
		if h2.start.Sensors[1].Interval != 7*time.Second || h2.start.Buffer.MaxAge != 24*time.Hour {
			t.Fatalf("start config after restart: %+v %v", h2.start.Sensors, h2.start.Buffer.MaxAge)
		}
		if r := h2.m.Report(); r.Source != "remote" || r.Version != "3.1.0" || r.State != remote.StateOK {
			t.Fatalf("report after restart: %+v", r)
		}
		// A different fleet key (rotated, or a state file forged on the
		// card) does not verify the stored documents: the local file rules.
		h3 := newHarness(t, newKey(t), h.local, dir)
		if h3.start.Sensors[1].Interval != 2*time.Second {
			t.Fatalf("stored documents used without a verifying key: %+v", h3.start.Sensors)
		}
	})
}

// TestManagerRestartToApply: a change the agent cannot make in place
// ends Run with ErrRestart; the next start uses it, on trial; a config
// that keeps the agent from starting (three starts without proving
// itself) is rolled back at start.
func TestManagerRestartToApply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		dir := t.TempDir()
		local := localConfig(t)
		h := newHarness(t, k, local, dir)
		h.ap.restart = true
		h.run()
		h.offer(remote.LevelFleet, "", 1, map[string]any{"buffer": map[string]any{"max_bytes": "8MiB"}})
		if err := <-h.done; !errors.Is(err, remote.ErrRestart) {
			t.Fatalf("Run = %v, want ErrRestart", err)
		}
		for start := 1; start <= 2; start++ {
			h := newHarness(t, k, local, dir)
			if h.start.Buffer.MaxBytes != 8<<20 {
				t.Fatalf("start %d: max_bytes %v", start, h.start.Buffer.MaxBytes)
			}
			if r := h.m.Report(); r.State != remote.StateTrial {
				t.Fatalf("start %d: %+v", start, r)
			}
		}
		h = newHarness(t, k, local, dir)
		if h.start.Buffer.MaxBytes != local.Buffer.MaxBytes {
			t.Fatalf("third start still on the trial config")
		}
		if r := h.m.Report(); r.State != remote.StateRolledBack || !strings.Contains(r.Error, "restarted 3 times") {
			t.Fatalf("report %+v", r)
		}
		_ = fmt.Sprint()
	})
}
