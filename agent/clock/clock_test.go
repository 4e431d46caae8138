package clock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/clock"
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
