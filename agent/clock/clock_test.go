package clock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"golang.org/x/sys/unix"
)

// fakeTime is a wall clock that can be stepped and a monotonic clock that
// only moves forward, like a Pi's clocks when timesyncd sets the time.
type fakeTime struct {
	mu     sync.Mutex
	wall   time.Time
	mono   time.Duration
	synced bool
}

func (f *fakeTime) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wall = f.wall.Add(d)
	f.mono += d
}

func (f *fakeTime) step(to time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wall = to
}

func (f *fakeTime) Synced() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.synced, nil
}

func (f *fakeTime) opt() clock.Option {
	return clock.WithTime(
		func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.wall },
		func() time.Duration { f.mu.Lock(); defer f.mu.Unlock(); return f.mono },
	)
}

func TestUnsyncedTimelineIsCorrectedByOffset(t *testing.T) {
	// Boot: fake-hwclock restored last shutdown's time, a week behind.
	truth := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	f := &fakeTime{wall: truth.Add(-7 * 24 * time.Hour), mono: 3 * time.Second}
	c := clock.New(f, f.opt())

	f.advance(10 * time.Second)
	ts1, synced := c.Now()
	if synced {
		t.Fatal("clock reported synced before the source said so")
	}
	// Something steps the wall clock a little while still unsynced: our
	// timeline must not jump with it.
	f.step(f.wall.Add(time.Hour))
	f.advance(5 * time.Second)
	ts2, _ := c.Now()
	if got := ts2.Sub(ts1); got != 5*time.Second {
		t.Fatalf("unsynced timeline moved %v between readings 5s apart", got)
	}
	if became, err := c.Check(); became || err != nil {
		t.Fatalf("Check while unsynced = %v, %v", became, err)
	}

	// NTP sets the true time and the kernel clears STA_UNSYNC.
	f.advance(20 * time.Second)
	f.step(truth.Add(3*time.Second + 35*time.Second)) // boot + mono elapsed
	f.mu.Lock()
	f.synced = true
	f.mu.Unlock()
	became, err := c.Check()
	if !became || err != nil {
		t.Fatalf("Check after sync = %v, %v; want true, nil", became, err)
	}
	if again, _ := c.Check(); again {
		t.Fatal("Check reported the sync twice")
	}
	wantTS1 := truth.Add(13 * time.Second)
	if got := ts1.Add(c.Offset()); !got.Equal(wantTS1) {
		t.Fatalf("corrected ts1 = %v, want %v", got, wantTS1)
	}
	if got := ts2.Add(c.Offset()); !got.Equal(wantTS1.Add(5 * time.Second)) {
		t.Fatalf("corrected ts2 = %v, want %v", got, wantTS1.Add(5*time.Second))
	}
	now, synced := c.Now()
	if !synced || !now.Equal(truth.Add(38*time.Second)) {
		t.Fatalf("Now after sync = %v, %v", now, synced)
	}
}

func TestSyncedAtStartHasNoOffset(t *testing.T) {
	c := clock.New(clock.Always(true))
	if became, err := c.Check(); !became || err != nil {
		t.Fatalf("Check = %v, %v", became, err)
	}
	if c.Offset() > time.Millisecond || c.Offset() < -time.Millisecond {
		t.Fatalf("offset %v for a clock that never stepped", c.Offset())
	}
	ts, synced := c.Now()
	if !synced || time.Since(ts) > time.Second || ts.Location() != time.UTC {
		t.Fatalf("Now = %v, %v", ts, synced)
	}
}

func TestSyncedFrom(t *testing.T) {
	for _, tc := range []struct {
		name     string
		state    int
		status   int32
		maxerror int64
		want     bool
	}{
		{"timesyncd synced", unix.TIME_OK, unix.STA_PLL, 500_000, true},
		{"boot unsynced flag", unix.TIME_OK, unix.STA_UNSYNC, 16_000_000, false},
		{"time error state", unix.TIME_ERROR, 0, 1000, false},
		{"maxerror at ceiling", unix.TIME_OK, 0, 16_000_000, false},
		{"leap second pending", unix.TIME_INS, 0, 1000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clock.SyncedFrom(tc.state, tc.status, tc.maxerror); got != tc.want {
				t.Fatalf("SyncedFrom = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestKernelAnswers(t *testing.T) {
	// The real syscall: whatever this machine's state, it must not fail.
	if _, err := (clock.Kernel{}).Synced(); err != nil {
		t.Fatal(err)
	}
}

// bootTime is a Pi's clocks for one boot, driven by the test: the time
// since boot (CLOCK_BOOTTIME), which only moves forward, and a wall clock
// that is off by skew until NTP sets it.
type bootTime struct {
	mu       sync.Mutex
	trueBoot time.Time     // the true wall time at boot
	since    time.Duration // time since boot
	skew     time.Duration // wall clock minus true time
	synced   bool
}

func (b *bootTime) at(since time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.since = since
}

func (b *bootTime) ntp(skew time.Duration, synced bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.skew, b.synced = skew, synced
}

func (b *bootTime) Synced() (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.synced, nil
}

func (b *bootTime) clock(id [16]byte, opts ...clock.Option) *clock.Clock {
	return clock.New(b, append([]clock.Option{clock.WithBootID(id), clock.WithTime(
		func() time.Time { b.mu.Lock(); defer b.mu.Unlock(); return b.trueBoot.Add(b.since + b.skew) },
		func() time.Duration { b.mu.Lock(); defer b.mu.Unlock(); return b.since },
	)}, opts...)...)
}

// take is what the poller does: stamp a reading.
func take(c *clock.Clock) reading.Reading {
	s := c.Stamp()
	return reading.Reading{DeviceID: "pi-1", Sensor: "s", Kind: "sim", TS: s.TS, TimeSynced: s.Synced, Boot: s.Boot,
		Values: map[string]float64{reading.Temperature: 20}}
}

// TestReadingBeforeSyncGetsItsTrueTime is issue 13's case: a reading taken
// at boot+5s with the clock 3 days behind, NTP at boot+90s. The correction
// gives it the true time, also when the agent restarted in between (the
// boot id is the same), and never to a reading of an earlier boot.
func TestReadingBeforeSyncGetsItsTrueTime(t *testing.T) {
	thisBoot := [16]byte{0x4f, 0x5d, 1}
	earlierBoot := [16]byte{0x11, 0x22, 2}
	const behind = -72 * time.Hour
	for _, restart := range []bool{false, true} {
		name := "same run"
		if restart {
			name = "agent restarted at boot+30s"
		}
		t.Run(name, func(t *testing.T) {
			pi := &bootTime{trueBoot: time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC)}
			pi.ntp(behind, false)
			pi.at(2 * time.Second) // the agent starts
			c := pi.clock(thisBoot, clock.WithHold(10*time.Minute))

			pi.at(5 * time.Second)
			r := take(c)
			if r.TimeSynced || r.Boot.ID != thisBoot || r.Boot.Since != 5*time.Second {
				t.Fatalf("reading before sync = %+v; want unsynced, stamped boot+5s", r)
			}
			if got := r.TS.Sub(pi.trueBoot.Add(5 * time.Second)); got != behind {
				t.Fatalf("unsynced ts is %v off, want %v (the wall clock's error)", got, behind)
			}
			if d := c.Held(r.TimeSynced, r.Boot); d != 10*time.Minute {
				t.Fatalf("held for %v right after it was taken, want 10m", d)
			}
			prevBoot := r
			prevBoot.Boot.ID = earlierBoot
			if d := c.Held(false, prevBoot.Boot); d != 0 {
				t.Fatalf("a reading of an earlier boot is held for %v; nothing can correct it", d)
			}

			if restart {
				pi.at(30 * time.Second)
				c = pi.clock(thisBoot, clock.WithHold(10*time.Minute))
				pi.at(40 * time.Second)
				if r2 := take(c); r2.Boot.Since != 40*time.Second || r2.TimeSynced {
					t.Fatalf("reading of the second run = %+v", r2)
				}
			}

			pi.at(90 * time.Second)
			if became, _ := c.Check(); became {
				t.Fatal("synced before NTP")
			}
			if d := c.Held(false, r.Boot); d != 10*time.Minute-85*time.Second {
				t.Fatalf("held for %v at boot+90s, want %v", d, 10*time.Minute-85*time.Second)
			}
			pi.ntp(0, true) // NTP steps the clock 3 days forward
			if became, err := c.Check(); !became || err != nil {
				t.Fatalf("Check after NTP = %v, %v", became, err)
			}
			if !c.Correct(&r) {
				t.Fatal("the reading of this boot was not corrected")
			}
			if want := pi.trueBoot.Add(5 * time.Second); !r.TS.Equal(want) || !r.TimeSynced || !r.Boot.IsZero() {
				t.Fatalf("corrected reading: ts %v synced %v stamp %v; want %v, synced, no stamp", r.TS, r.TimeSynced, r.Boot, want)
			}
			if c.Correct(&prevBoot) || prevBoot.TimeSynced {
				t.Fatalf("a reading of an earlier boot was changed: %+v", prevBoot)
			}
			if c.Correct(&r) {
				t.Fatal("a corrected reading was corrected again")
			}
		})
	}
}

// TestBackwardsStepAfterSync: NTP steps a synced clock back. New readings
// take the stepped time (the true time), corrections keep using the boot
// reference taken at the sync, and the hold is measured on the boot clock,
// so no duration comes out negative.
func TestBackwardsStepAfterSync(t *testing.T) {
	id := [16]byte{5}
	pi := &bootTime{trueBoot: time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC)}
	pi.ntp(-time.Hour, false)
	pi.at(10 * time.Second)
	c := pi.clock(id, clock.WithHold(time.Minute))
	early := take(c)
	pi.at(20 * time.Second)
	pi.ntp(0, true)
	c.Check()
	pi.at(25 * time.Second)
	pi.ntp(-2*time.Second, true) // a step back after the sync
	later := take(c)
	if !later.TimeSynced || !later.TS.Equal(pi.trueBoot.Add(23*time.Second)) {
		t.Fatalf("reading after the step: %+v", later)
	}
	if !c.Correct(&early) || !early.TS.Equal(pi.trueBoot.Add(10*time.Second)) {
		t.Fatalf("correction after the step: %v, want boot+10s", early.TS)
	}
	// The hold of a stamped reading counts boot time only.
	stamp := reading.BootStamp{ID: id, Since: 25 * time.Second}
	for _, since := range []time.Duration{25 * time.Second, 50 * time.Second, 10 * time.Minute} {
		pi.at(since)
		d := c.Held(false, stamp)
		if want := max(time.Minute-(since-25*time.Second), 0); d != want {
			t.Fatalf("held %v at boot+%v, want %v", d, since, want)
		}
	}
	// A stamp ahead of the boot clock (cannot happen) is not held longer than the hold.
	pi.at(time.Second)
	if d := c.Held(false, stamp); d != time.Minute {
		t.Fatalf("held %v for a stamp ahead of the clock", d)
	}
}

func TestParseBootID(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"4f5d3c1e-8a2b-4c6d-9e0f-1a2b3c4d5e6f\n", true},
		{"4F5D3C1E8A2B4C6D9E0F1A2B3C4D5E6F", true},
		{"", false}, {"not-a-uuid", false}, {"00000000-0000-0000-0000-000000000000\n", false},
		{"4f5d3c1e-8a2b-4c6d-9e0f-1a2b3c4d5e6", false},
	} {
		if _, err := clock.ParseBootID(tc.in); (err == nil) != tc.ok {
			t.Errorf("ParseBootID(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
	if id, err := clock.BootID(); err != nil || id == [16]byte{} {
		t.Logf("no boot id on this machine: %v", err)
	}
}
