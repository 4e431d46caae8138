package status_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/agent/status"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

var thisBoot = [16]byte{0xb0, 0x07}

// lossyBuffer builds a real buffer that dropped readings by max_bytes,
// moved one damaged record aside, and holds its 3 newest readings for the
// clock (taken unsynced in thisBoot; the hold says 4 more minutes).
func lossyBuffer(t *testing.T) *buffer.Buffer {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	hold := func(synced bool, b reading.BootStamp) time.Duration {
		if synced || b.ID != thisBoot {
			return 0
		}
		return 4 * time.Minute
	}
	opts := buffer.Options{MaxBytes: 16 << 10, WhenFull: buffer.Drop, Hold: hold}
	b, err := buffer.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	for i := range 200 { // about 200 bytes each: max_bytes drops the oldest
		r := &reading.Reading{DeviceID: "pi-1", Sensor: "bme280-0x76", Kind: "bme280", TS: start.Add(time.Duration(i) * time.Second),
			TimeSynced: true, Values: map[string]float64{"temperature_c": 21.5, "humidity_pct": 48.25, "pressure_hpa": 1008.5}}
		if err := b.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	st, err := b.Stats()
	if err != nil || st.DroppedBytes == 0 {
		t.Fatalf("stats %+v, %v: want drops by max_bytes", st, err)
	}
	damaged := st.OldestSeq + 5
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.FlipValueDigit(t, path, damaged)
	if b, err = buffer.Open(path, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	for i := range 3 {
		r := &reading.Reading{DeviceID: "pi-1", Sensor: "bme280-0x76", Kind: "bme280", TS: time.Now().UTC().Truncate(time.Millisecond),
			Values: map[string]float64{"temperature_c": 21.5}, Boot: reading.BootStamp{ID: thisBoot, Since: time.Duration(100+i) * time.Second}}
		if err := b.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestHeartbeatFields: every field of the heartbeat comes from its source:
// a real buffer with drops, a damaged record and held readings, the Pi 4
// fixture tree, a health board, the clock and the publisher's view.
func TestHeartbeatFields(t *testing.T) {
	b := lossyBuffer(t)
	now := time.Now()
	var board health.Board
	board.Track([]string{"bme280-0x76", "ds18b20-1", "dht22-gpio4", "sim-1"})
	board.Good("bme280-0x76", now.Add(-2*time.Second))
	for range 7 {
		board.Suppressed("bme280-0x76") // within its deadband
	}
	crc := fault.Mark(fault.CRC, errors.New("w1_slave: crc=a2 NO"))
	for range 4 {
		board.Fail("ds18b20-1", now.Add(-3*time.Second), crc)
	}
	board.Fail("dht22-gpio4", now.Add(-20*time.Second), fault.Mark(fault.Timeout, errors.New("no answer")))
	board.Good("dht22-gpio4", now.Add(-10*time.Second))
	boot := now.Add(-26 * time.Hour).Truncate(time.Second)
	lastConfirm := now.Add(-7 * time.Second).Truncate(time.Second)
	rep := status.NewReporter(status.Sources{
		Agent: "1.4.0", Delivery: "kafka", Started: now.Add(-90 * time.Second),
		Config:    func() heartbeat.Config { return heartbeat.Config{Version: "9f2c4e1ab3d0", Source: "file"} },
		Buffer:    b.Stats,
		BufferDir: filepath.Dir(b.Path()),
		Unconfirmed: func() status.Unconfirmed {
			return status.Unconfirmed{N: 12, Oldest: now.Add(-30 * time.Second), LastConfirm: lastConfirm}
		},
		Clock: func() status.Clock {
			return status.Clock{Synced: true, Step: 72*time.Hour + 125*time.Millisecond, Boot: boot}
		},
		Health:          &board,
		ConfirmUnsigned: func() bool { return true },
		SysfsRoot:       filepath.Join("testdata", "sysfs", "pi4"),
	}, status.ReporterOptions{})

	payload := rep.Status(heartbeat.Online)
	h, err := heartbeat.Decode(payload)
	if err != nil {
		t.Fatal(err)
	}
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	near := func(name string, got, want int64) {
		t.Helper()
		if got < want-2 || got > want+2 {
			t.Errorf("%s = %d, want %d (±2)", name, got, want)
		}
	}
	if h.V != 2 || h.State != "online" || h.Agent != "1.4.0" || h.Delivery != "kafka" || !h.ConfirmUnsigned {
		t.Errorf("header fields: %s", payload)
	}
	near("ts", h.TS, now.Unix())
	near("uptime", h.Uptime, 90)
	if h.StatusInterval != 60 { // the default status_interval
		t.Errorf("status_interval = %d, want 60", h.StatusInterval)
	}
	if h.Boot != boot.Unix() {
		t.Errorf("boot = %d, want %d", h.Boot, boot.Unix())
	}
	if want := (heartbeat.Config{Version: "9f2c4e1ab3d0", Source: "file"}); h.Config == nil || *h.Config != want {
		t.Errorf("config = %+v, want %+v", h.Config, want)
	}
	if want := (heartbeat.Clock{Synced: true, Step: 259200.125}); h.Clock == nil || *h.Clock != want {
		t.Errorf("clock = %+v, want %+v", h.Clock, want)
	}
	hb := h.Buffer
	if hb == nil {
		t.Fatalf("no buffer in %s", payload)
	}
	if hb.Readings != st.Count || hb.Bytes != st.LiveBytes || hb.Held != 3 || hb.Damaged != 1 ||
		!reflect.DeepEqual(hb.Drops, map[string]uint64{"max_bytes": st.DroppedBytes}) || st.DroppedBytes == 0 {
		t.Errorf("buffer = %+v; stats %+v", *hb, st)
	}
	near("buffer.oldest_age", hb.OldestAge, int64(now.Sub(st.OldestTS)/time.Second))
	if hb.OldestAge < 3000 {
		t.Errorf("buffer.oldest_age = %d, want about an hour", hb.OldestAge)
	}
	if hb.Unconfirmed != 12 || hb.LastConfirm != lastConfirm.Unix() {
		t.Errorf("unconfirmed %d, last_confirm %d", hb.Unconfirmed, hb.LastConfirm)
	}
	near("buffer.unconfirmed_age", hb.UnconfirmedAge, 30)
	if hb.DiskFree <= 0 {
		t.Errorf("buffer.disk_free = %d", hb.DiskFree)
	}
	wantHost := heartbeat.Host{Throttle: &heartbeat.Throttle{Now: []string{"under_voltage", "throttled"}, SinceBoot: []string{"under_voltage", "throttled"}}}
	if h.Host == nil || h.Host.TempC == nil || *h.Host.TempC != 48.312 || !reflect.DeepEqual(h.Host.Throttle, wantHost.Throttle) {
		t.Errorf("host = %s", payload)
	}
	want := map[string]heartbeat.Sensor{
		"bme280-0x76": {State: "ok", LastGood: now.Add(-2 * time.Second).Unix(), Suppressed: 7},
		"ds18b20-1": {State: "failing", Fails: 4, ErrClass: "crc", Err: "w1_slave: crc=a2 NO",
			ErrAt: now.Add(-3 * time.Second).Unix()},
		"dht22-gpio4": {State: "ok", LastGood: now.Add(-10 * time.Second).Unix(), ErrClass: "timeout", ErrAt: now.Add(-20 * time.Second).Unix()},
		"sim-1":       {State: "unknown"},
	}
	if !reflect.DeepEqual(h.Sensors, want) {
		t.Errorf("sensors = %+v\nwant      %+v", h.Sensors, want)
	}
	t.Logf("%d bytes: %s", len(payload), payload)

	will, err := heartbeat.Decode(rep.Will())
	if err != nil || will.State != "offline" || will.Agent != "1.4.0" || will.Boot != boot.Unix() || will.Buffer != nil || will.Sensors != nil ||
		will.StatusInterval != 60 || will.TS != 0 {
		t.Errorf("will = %+v, %v", will, err)
	}
}

// TestHeartbeatSize: a healthy Pi with four sensors in delivery kafka
// sends well under 1 KiB per heartbeat (a Pi on cellular pays per byte).
func TestHeartbeatSize(t *testing.T) {
	now := time.Now()
	var board health.Board
	names := []string{"bme280-0x76", "dht22-gpio4", "ds18b20-28-000005e2fdc3", "sim-1"}
	board.Track(names)
	for _, n := range names {
		board.Good(n, now)
	}
	rep := status.NewReporter(status.Sources{
		Agent: "v1.4.0-3-g1a2b3c4", Delivery: "kafka",
		Config: func() heartbeat.Config { return heartbeat.Config{Version: "9f2c4e1ab3d0", Source: "file"} },
		Buffer: func() (buffer.Stats, error) {
			return buffer.Stats{Count: 3, LiveBytes: 780, OldestTS: now.Add(-3 * time.Second)}, nil
		},
		BufferDir: t.TempDir(),
		Unconfirmed: func() status.Unconfirmed {
			return status.Unconfirmed{N: 3, Oldest: now.Add(-time.Second), LastConfirm: now}
		},
		Clock: func() status.Clock {
			return status.Clock{Synced: true, Step: 3 * time.Second, Boot: now.Add(-48 * time.Hour)}
		},
		Health:    &board,
		SysfsRoot: filepath.Join("testdata", "sysfs", "pi-ok"),
	}, status.ReporterOptions{})
	p := rep.Status(heartbeat.Online)
	t.Logf("heartbeat of a healthy Pi with 4 sensors: %d bytes: %s", len(p), p)
	if len(p) > 768 {
		t.Errorf("heartbeat is %d bytes, want at most 768", len(p))
	}
}

// fakeSources is a Pi whose state the test changes.
type fakeSources struct {
	mu      sync.Mutex
	stats   buffer.Stats
	synced  bool
	cfg     heartbeat.Config
	board   health.Board
	sysfs   string
	builds  int
	unsig   bool
	bufFail error
}

func (f *fakeSources) set(fn func(f *fakeSources)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeSources) sources() status.Sources {
	return status.Sources{
		Agent: "test", Delivery: "kafka",
		Buffer: func() (buffer.Stats, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.builds++
			return f.stats, f.bufFail
		},
		Clock: func() status.Clock {
			f.mu.Lock()
			defer f.mu.Unlock()
			return status.Clock{Synced: f.synced}
		},
		Config: func() heartbeat.Config {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.cfg
		},
		ConfirmUnsigned: func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.unsig
		},
		Health:    &f.board,
		SysfsRoot: f.sysfs,
	}
}

// dueAfter runs Due and returns how long it took on the bubble's clock.
func dueAfter(t *testing.T, r *status.Reporter) time.Duration {
	t.Helper()
	start := time.Now()
	if err := r.Due(t.Context()); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// TestHeartbeatDue: on a fake clock (testing/synctest), the heartbeat is
// due every interval when nothing changes, MinGap after the last one when
// something worth telling changed, at once after Changed, and never for
// a change that is not news (a single failed read, drops that go on).
func TestHeartbeatDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeSources{stats: buffer.Stats{Count: 10}}
		f.board.Track([]string{"ds18b20-1"})
		f.board.Good("ds18b20-1", time.Now())
		r := status.NewReporter(f.sources(), status.ReporterOptions{}) // 60s, check 5s, gap 15s
		r.Status(heartbeat.Online)

		step := func(name string, change func(), want time.Duration) {
			t.Helper()
			if change != nil {
				change()
			}
			if got := dueAfter(t, r); got != want {
				t.Errorf("%s: due after %v, want %v", name, got, want)
			}
			r.Status(heartbeat.Online)
		}
		crc := fault.Mark(fault.CRC, errors.New("crc"))
		step("nothing changes", nil, time.Minute)
		step("one failed read is not news", func() { f.board.Fail("ds18b20-1", time.Now(), crc) }, time.Minute)
		step("the third in a row is", func() {
			f.board.Fail("ds18b20-1", time.Now(), crc)
			f.board.Fail("ds18b20-1", time.Now(), crc)
		}, 15*time.Second)
		step("more failures are not", func() { f.board.Fail("ds18b20-1", time.Now(), crc) }, time.Minute)
		step("recovery is", func() { f.board.Good("ds18b20-1", time.Now()) }, 15*time.Second)
		step("a reading within the deadband is not", func() { f.board.Suppressed("ds18b20-1") }, time.Minute)

		// A change 42s after the last heartbeat is seen at the next check.
		done := make(chan time.Duration)
		go func() { done <- dueAfter(t, r) }()
		time.Sleep(42 * time.Second)
		f.set(func(f *fakeSources) { f.synced = true })
		if got := <-done; got != 45*time.Second {
			t.Errorf("clock synced 42s after a heartbeat: due after %v, want at the next check (45s)", got)
		}
		r.Status(heartbeat.Online)

		step("drops start", func() { f.set(func(f *fakeSources) { f.stats.DroppedBytes = 5 }) }, 15*time.Second)
		step("drops go on", func() { f.set(func(f *fakeSources) { f.stats.DroppedBytes = 9 }) }, time.Minute)
		step("drops stopped", nil, time.Minute) // this heartbeat saw none since the last
		step("drops again", func() { f.set(func(f *fakeSources) { f.stats.DroppedAge = 1 }) }, 15*time.Second)
		step("a damaged record", func() { f.set(func(f *fakeSources) { f.stats.Damaged = 1 }) }, 15*time.Second)
		step("readings held", func() { f.set(func(f *fakeSources) { f.stats.Held = 4 }) }, 15*time.Second)
		step("more held is not news", func() { f.set(func(f *fakeSources) { f.stats.Held = 40 }) }, time.Minute)
		step("a new config", func() { f.set(func(f *fakeSources) { f.cfg.Version = "abc" }) }, 15*time.Second)
		step("unsigned confirmations", func() { f.set(func(f *fakeSources) { f.unsig = true }) }, 15*time.Second)
		step("buffer broken", func() { f.set(func(f *fakeSources) { f.bufFail = errors.New("closed") }) }, 15*time.Second)
		step("the buffer back", func() { f.set(func(f *fakeSources) { f.bufFail = nil }) }, 15*time.Second)
		step("Changed", r.Changed, 0)

		r.SetInterval(10 * time.Second) // check 2.5s, gap 5s
		step("a shorter interval", nil, 10*time.Second)
		step("a change at the shorter gap", func() { f.set(func(f *fakeSources) { f.stats.Damaged = 2 }) }, 5*time.Second)

		// SetInterval wakes a waiting Due.
		r.SetInterval(time.Hour)
		go func() { done <- dueAfter(t, r) }()
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		r.SetInterval(20 * time.Minute)
		if got := <-done; got != 30*time.Minute {
			t.Errorf("interval shortened under a waiting Due: due after %v, want at once (30m)", got)
		}

		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := r.Due(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Due with a cancelled ctx = %v", err)
		}
	})
}

// TestHeartbeatThrottleChange: a Pi whose supply sags is news.
func TestHeartbeatThrottleChange(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, filepath.Join("testdata", "sysfs", "pi-ok"), dir)
	synctest.Test(t, func(t *testing.T) {
		f := &fakeSources{sysfs: dir}
		r := status.NewReporter(f.sources(), status.ReporterOptions{})
		r.Status(heartbeat.Online)
		writeFile(t, filepath.Join(dir, "devices/platform/soc/soc:firmware/get_throttled"), "50005\n")
		if got := dueAfter(t, r); got != 15*time.Second {
			t.Errorf("under-voltage: due after %v, want 15s", got)
		}
		h, err := heartbeat.Decode(r.Status(heartbeat.Online))
		if err != nil || h.Host == nil || fmt.Sprint(h.Host.Throttle.Now) != "[under_voltage throttled]" {
			t.Errorf("heartbeat %+v, %v", h, err)
		}
	})
}

// TestChangedDuringBuildIsNotLost: an over-the-air update's stages follow
// each other within milliseconds; a Changed made while a heartbeat is
// being built (so possibly after its source was read) makes the next one
// due at once, and the heartbeat carries the update's stage.
func TestChangedDuringBuildIsNotLost(t *testing.T) {
	var rep *status.Reporter
	stage := heartbeat.UpdateDownloading
	var once sync.Once
	rep = status.NewReporter(status.Sources{
		Agent: "test",
		Update: func() *heartbeat.Update {
			u := &heartbeat.Update{State: stage, Version: "1.1.0"}
			once.Do(func() { stage = heartbeat.UpdateRefused; rep.Changed() }) // the stage moved on mid-build
			return u
		},
	}, status.ReporterOptions{Interval: time.Hour})
	var hb heartbeat.Heartbeat
	if err := json.Unmarshal(rep.Status(heartbeat.Online), &hb); err != nil {
		t.Fatal(err)
	}
	if hb.Update == nil || hb.Update.State != heartbeat.UpdateDownloading {
		t.Fatalf("first heartbeat's update: %+v", hb.Update)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := rep.Due(ctx); err != nil {
		t.Fatalf("the change made during the build was lost: Due: %v", err)
	}
	if err := json.Unmarshal(rep.Status(heartbeat.Online), &hb); err != nil || hb.Update.State != heartbeat.UpdateRefused {
		t.Fatalf("second heartbeat's update: %+v (%v)", hb.Update, err)
	}
}
