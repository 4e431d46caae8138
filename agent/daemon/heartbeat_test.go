package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/bufhttp"
	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// fullBuffer fills a buffer at path up to max_bytes 1MiB, so it has
// dropped its oldest readings, damages one stored record and returns the
// drops so far.
func fullBuffer(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := buffer.Open(path, buffer.Options{MaxBytes: 1 << 20, WhenFull: buffer.Drop})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	var st buffer.Stats
	for i := 0; st.DroppedBytes == 0; i++ {
		rs := make([]*reading.Reading, 100)
		for j := range rs {
			rs[j] = &reading.Reading{DeviceID: "pi-loss", Sensor: "sim-1", Kind: "sim", TS: ts.Add(time.Duration(i*100+j) * time.Millisecond),
				TimeSynced: true, Values: map[string]float64{reading.Temperature: 21.5, reading.Humidity: 48.25}}
		}
		if err := b.Append(context.Background(), rs...); err != nil {
			t.Fatal(err)
		}
		if st, err = b.Stats(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.FlipValueDigit(t, path, st.OldestSeq+10)
	return st.DroppedBytes
}

// TestHeartbeatCarriesLosses is issue 19's finding 8 on a real broker: a
// Pi whose buffer is full (delivery kafka, no forwarder confirms) and held
// a damaged record. The retained status message says so: drops by
// max_bytes, going up while the agent runs, the damaged record, the
// unconfirmed readings and the age of the oldest, with the agent's and the
// config's versions, its clock, disk and CPU temperature.
func TestHeartbeatCarriesLosses(t *testing.T) {
	br := broker.New(t, broker.Options{})
	dir := t.TempDir()
	db := filepath.Join(dir, "buffer.db")
	dropped := fullBuffer(t, db)
	sysfs, err := filepath.Abs("../status/testdata/sysfs/pi4")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fmt.Sprintf(`device_id: pi-loss
sensors: [{name: sim-1, driver: sim, interval: 20ms}, {name: sim-2, driver: sim, interval: 20ms}]
buffer: {path: %s, max_bytes: 1MiB, when_full: drop}
mqtt: {url: %q}
status_listen: 127.0.0.1:0
status_interval: 1m
sysfs_root: %s
`, db, br.URL(), sysfs), nil)
	cfg.StatusInterval = 2 * time.Second // a change goes out after 1s
	startAgent(t, cfg, daemon.Options{Version: "1.2.3-test"})

	topic := heartbeat.Topic("sensors", "pi-loss")
	var h heartbeat.Heartbeat
	testkit.WaitFor(t, "the heartbeat to show drops going up while the agent runs", 15*time.Second, func() bool {
		if br.Retained(topic) == "" {
			return false
		}
		h = statusOf(t, br.Retained(topic))
		return h.Buffer != nil && h.Buffer.Drops["max_bytes"] > dropped && h.Buffer.Unconfirmed > 0
	})
	b := h.Buffer
	if h.State != "online" || h.Agent != "1.2.3-test" || h.Delivery != "kafka" || h.Config == nil ||
		h.Config.Version != cfg.Version() || len(cfg.Version()) != 12 || h.Config.Source != "file" {
		t.Errorf("heartbeat header: %s", br.Retained(topic))
	}
	if b.Damaged != 1 || b.Drops["max_age"] != 0 || b.Readings == 0 || b.Bytes > 1<<20 || b.Bytes < 1<<19 ||
		b.OldestAge < 3000 || b.DiskFree <= 0 || b.Held != 0 {
		t.Errorf("heartbeat buffer: %s", br.Retained(topic))
	}
	if b.Unconfirmed > 10000 || b.LastConfirm != 0 {
		t.Errorf("unconfirmed %d, last confirm %d", b.Unconfirmed, b.LastConfirm)
	}
	if h.Clock == nil || !h.Clock.Synced || h.Boot == 0 || h.Host == nil || h.Host.TempC == nil || *h.Host.TempC != 48.312 ||
		h.Host.Throttle == nil || len(h.Host.Throttle.Now) != 2 {
		t.Errorf("heartbeat clock and host: %s", br.Retained(topic))
	}
	// The oldest unconfirmed reading's age grows with the interval.
	testkit.WaitFor(t, "the unconfirmed age to reach 2s", 10*time.Second, func() bool {
		h = statusOf(t, br.Retained(topic))
		return h.Buffer != nil && h.Buffer.UnconfirmedAge >= 2
	})
	t.Logf("%d bytes: %s", len(br.Retained(topic)), br.Retained(topic))
}

// TestClockHoldIsTold is issue 19's finding 9: a Pi whose clock never
// syncs holds its readings (clock.hold_unsynced) and says so once, with the
// count and when the hold of the first ends, and once more when that time
// passes; the status endpoint's buffer stats and the heartbeat show the
// held readings.
func TestClockHoldIsTold(t *testing.T) {
	var heartbeats atomic.Int64
	br := broker.New(t, broker.Options{Filter: "sensors/pi-hold/status", Inline: func(string, []byte) { heartbeats.Add(1) }})
	pi := newPiClock() // never synced
	cfg := parse(t, fmt.Sprintf(`device_id: pi-hold
sensors: [{name: sim-1, driver: sim, interval: 50ms}]
buffer: {path: %s}
mqtt: {url: %q, delivery: broker}
status_listen: 127.0.0.1:0
clock: {hold_unsynced: 3s}
`, filepath.Join(t.TempDir(), "b.db"), br.URL()), nil)
	cfg.StatusInterval = 400 * time.Millisecond
	var logs testkit.LogBuffer
	o := pi.options([16]byte{0x42})
	o.Logger = logs.Logger()
	_, addr := startAgent(t, cfg, o)

	held := regexp.MustCompile(`msg="the clock is not synced \(no NTP yet\): readings are held back[^"]*" held=(\d+) hold_ends=(\S+) hold_unsynced=3s`)
	testkit.WaitFor(t, "the hold to be logged", 10*time.Second, func() bool { return held.MatchString(logs.String()) })
	m := held.FindStringSubmatch(logs.String())
	n, _ := strconv.Atoi(m[1])
	ends, err := time.Parse(time.RFC3339, m[2])
	if n < 1 || err != nil || time.Until(ends) > 3*time.Second || time.Until(ends) < 0 {
		t.Errorf("hold logged with held=%s hold_ends=%s (%v)", m[1], m[2], err)
	}

	var st bufhttp.Stats
	_, body := httpGet(t, "http://"+addr+"/buffer/stats")
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Held == 0 || st.HeldUntil.IsZero() {
		t.Errorf("/buffer/stats = %s (%v); want held readings", body, err)
	}
	topic := heartbeat.Topic("sensors", "pi-hold")
	testkit.WaitFor(t, "the heartbeat to show held readings", 10*time.Second, func() bool {
		r := br.Retained(topic)
		if r == "" {
			return false
		}
		h := statusOf(t, r)
		return h.Buffer != nil && h.Buffer.Held > 0 && h.Clock != nil && !h.Clock.Synced
	})

	ended := `msg="the clock is still not synced after clock.hold_unsynced: publishing readings as they are`
	testkit.WaitFor(t, "the end of the hold to be logged", 10*time.Second, func() bool { return strings.Contains(logs.String(), ended) })
	// A few more clock checks: each heartbeat of the 400ms interval follows one.
	after := heartbeats.Load()
	testkit.WaitFor(t, "two more heartbeats", 10*time.Second, func() bool { return heartbeats.Load() >= after+2 })
	if c := len(held.FindAllString(logs.String(), -1)); c != 1 {
		t.Errorf("the hold was logged %d times, want once", c)
	}
	if c := strings.Count(logs.String(), ended); c != 1 {
		t.Errorf("the end of the hold was logged %d times, want once", c)
	}
}

// TestMessagesPerReading measures what a Pi costs the broker: every
// message the device publishes (readings and heartbeats) per reading, with
// three sensors at typical intervals (10s, 5s, 30s) and the heartbeat at
// its default (60s), all scaled down 100 times so the test takes 6s.
func TestMessagesPerReading(t *testing.T) {
	var mu sync.Mutex
	var readings, statuses, statusBytes int
	br := broker.New(t, broker.Options{Filter: "sensors/pi-m/#", Inline: func(topic string, payload []byte) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasSuffix(topic, "/status") {
			statuses++
			statusBytes += len(payload)
		} else {
			readings++
		}
	}})
	cfg := parse(t, fmt.Sprintf(`device_id: pi-m
sensors:
  - {name: bme280-0x76, driver: sim, interval: 100ms}
  - {name: dht22-gpio4, driver: sim, interval: 50ms}
  - {name: ds18b20-1, driver: sim, interval: 300ms}
buffer: {path: %s}
mqtt: {url: %q, delivery: broker}
status_listen: 127.0.0.1:0
`, filepath.Join(t.TempDir(), "b.db"), br.URL()), nil)
	cfg.StatusInterval = 600 * time.Millisecond
	run, _ := startAgent(t, cfg, daemon.Options{})
	// 10 scaled minutes: the heartbeat at connect and ten of the interval's.
	testkit.WaitFor(t, "11 heartbeats", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return statuses >= 11
	})
	run.stop(t)
	mu.Lock()
	defer mu.Unlock()
	perReading := float64(readings+statuses) / float64(readings)
	t.Logf("%d readings, %d heartbeats (%d bytes on average): %.3f messages per reading", readings, statuses, statusBytes/max(statuses, 1), perReading)
	if readings < 100 || statuses < 5 || perReading > 1.3 {
		t.Errorf("%d readings, %d heartbeats: %.3f messages per reading, want at most 1.3", readings, statuses, perReading)
	}
}

// TestHeartbeatTellsFleetConfig: with remote config on, the heartbeat
// says which config is in force and its state, at once when it changes: a
// forged document refused (with why), then a signed one applied, whose
// status_interval the agent takes in place, without a restart.
func TestHeartbeatTellsFleetConfig(t *testing.T) {
	r := newFleetRig(t)
	cfg := r.config("status_interval: 1m\n")
	run, _ := startAgent(t, cfg, daemon.Options{})
	topic := heartbeat.Topic("sensors", "pi-1")
	config := func() heartbeat.Config {
		p := r.br.Retained(topic)
		if p == "" {
			return heartbeat.Config{}
		}
		if h := statusOf(t, p); h.Config != nil {
			return *h.Config
		}
		return heartbeat.Config{}
	}
	testkit.WaitFor(t, "the file's config in the heartbeat", 10*time.Second, func() bool {
		c := config()
		return c.Source == "file" && c.Version == cfg.Version()
	})

	forged, _ := sign.Generate()
	r.push(forged, remote.LevelDevice, "pi-1", 1, map[string]any{"status_interval": "1s"})
	testkit.WaitFor(t, "the refusal in the heartbeat, well before the 1m interval", 10*time.Second, func() bool {
		c := config()
		return c.State == remote.StateRefused && strings.Contains(c.Error, "signature") && c.Source == "file"
	})

	r.push(r.key, remote.LevelFleet, "", 1, map[string]any{"status_interval": "1s"})
	testkit.WaitFor(t, "the remote config in the heartbeat", 10*time.Second, func() bool {
		c := config()
		return c.Source == "remote" && c.Version == "1.0.0" && c.State == remote.StateOK && c.Error == ""
	})
	// Heartbeats now come every second.
	var last int64
	beats := 0
	testkit.WaitFor(t, "3 heartbeats at the new 1s interval", 10*time.Second, func() bool {
		if h := statusOf(t, r.br.Retained(topic)); h.TS != last {
			last, beats = h.TS, beats+1
		}
		return beats >= 3
	})
	select {
	case err := <-run.done:
		run.done <- err
		t.Fatalf("the agent stopped (%v): a status_interval change must not restart it", err)
	default:
	}
}
