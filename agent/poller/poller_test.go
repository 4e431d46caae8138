package poller_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/agent/poller"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/metricset"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers"
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

func openBuffer(t *testing.T) *buffer.Buffer {
	t.Helper()
	b, err := buffer.Open(filepath.Join(t.TempDir(), "b.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// all returns every reading in the buffer, decoded.
func all(t *testing.T, b *buffer.Buffer) []reading.Reading {
	t.Helper()
	recs, err := b.Peek(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]reading.Reading, 0, len(recs))
	for _, rec := range recs {
		r, err := reading.Decode(rec.Payload)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// slowSensor stands in for a hung I2C device: each Read blocks until its
// context ends. It records whether two reads ever overlapped.
type slowSensor struct {
	active, maxActive, reads atomic.Int32
}

func (s *slowSensor) Name() string { return "slow" }
func (s *slowSensor) Kind() string { return "slow" }
func (s *slowSensor) Close() error { return nil }
func (s *slowSensor) Read(ctx context.Context) (map[string]float64, error) {
	n := s.active.Add(1)
	defer s.active.Add(-1)
	for {
		m := s.maxActive.Load()
		if n <= m || s.maxActive.CompareAndSwap(m, n) {
			break
		}
	}
	s.reads.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

func open(extra map[string]drivers.Sensor) func(drivers.Spec) (drivers.Sensor, error) {
	return func(s drivers.Spec) (drivers.Sensor, error) {
		if sn, ok := extra[s.Name]; ok {
			return sn, nil
		}
		return drivers.Open(s, drivers.Env{})
	}
}

func runFor(t *testing.T, d time.Duration, o poller.Options) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- poller.Run(ctx, o) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(d + 2*time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
}

func TestAlignedScheduleAndSlowSensorIsolation(t *testing.T) {
	b := openBuffer(t)
	slow := &slowSensor{}
	errs := metricset.New().CounterVec("errors", "", "sensor", "class")
	readings := metricset.New().CounterVec("readings", "", "sensor")
	const iv = 100 * time.Millisecond
	runFor(t, 1050*time.Millisecond, poller.Options{
		DeviceID: "pi-1",
		Sensors: []drivers.Spec{
			{Name: "sim-1", Driver: "sim", Interval: iv},
			{Name: "slow", Driver: "sim", Interval: 50 * time.Millisecond},
		},
		Open:    open(map[string]drivers.Sensor{"slow": slow}),
		Buffer:  b,
		Clock:   syncedClock(),
		Metrics: poller.Metrics{Readings: readings, Errors: errs},
	})
	rs := all(t, b)
	if len(rs) < 8 || len(rs) > 11 {
		t.Fatalf("%d readings from a 100ms sensor in 1.05s; want about 10 despite the hung one", len(rs))
	}
	var offs []time.Duration
	var prevTick time.Time
	for _, r := range rs {
		if r.DeviceID != "pi-1" || r.Sensor != "sim-1" || r.Kind != "sim" || !r.TimeSynced || len(r.Values) == 0 {
			t.Fatalf("bad reading %+v", r)
		}
		// Aligned to multiples of the interval, one reading per tick: no
		// drift (offsets do not grow) and no two reads in one tick.
		tick := r.TS.Truncate(iv)
		if !tick.After(prevTick) {
			t.Errorf("two readings in the tick of %v", tick.Format("15:04:05.000"))
		}
		prevTick = tick
		offs = append(offs, r.TS.Sub(tick))
	}
	slices.Sort(offs)
	// The median read is within a few ms of its tick (generous for -race
	// on a shared 2-core machine, where a goroutine can wait 50ms+).
	if med := offs[len(offs)/2]; med > 25*time.Millisecond {
		t.Errorf("median reading is %v after its tick (all: %v)", med, offs)
	}
	if m := slow.maxActive.Load(); m != 1 {
		t.Errorf("the slow sensor had %d overlapping reads", m)
	}
	// Each slow read times out after 50ms, then waits for the next tick.
	if n := slow.reads.Load(); n < 5 || n > 11 {
		t.Errorf("slow sensor read %d times in 1.05s with a 50ms interval and 50ms timeouts", n)
	}
	if got := errs.With("slow", "timeout").Get(); got < 5 {
		t.Errorf("slow sensor errors = %v", got)
	}
	if got := readings.With("sim-1").Get(); got != uint64(len(rs)) {
		t.Errorf("readings metric %v, buffer holds %d", got, len(rs))
	}
}

func TestErrorsCountedLogsRateLimited(t *testing.T) {
	b := openBuffer(t)
	var logs testkit.LogBuffer
	errs := metricset.New().CounterVec("errors", "", "sensor", "class")
	runFor(t, 600*time.Millisecond, poller.Options{
		DeviceID: "pi-1",
		Sensors:  []drivers.Spec{{Name: "broken", Driver: "sim", Interval: 20 * time.Millisecond, FailRate: 1}},
		Open:     open(nil),
		Buffer:   b,
		Clock:    syncedClock(),
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
		Metrics:  poller.Metrics{Errors: errs},
	})
	if n := len(all(t, b)); n != 0 {
		t.Fatalf("%d readings stored from a sensor that always fails", n)
	}
	if got := errs.With("broken", "other").Get(); got < 20 {
		t.Fatalf("errors metric = %v; want one per poll (about 30)", got)
	}
	if n := strings.Count(logs.String(), "read sensor failed"); n != 1 {
		t.Fatalf("%d error log lines in 0.6s; want 1 (rate-limited):\n%s", n, logs.String())
	}
}

// sumErrors adds a sensor's error counts over every class.
func sumErrors(errs *metricset.CounterVec, sensor string) uint64 {
	var sum uint64
	for _, c := range fault.Classes() {
		sum += errs.With(sensor, string(c)).Get()
	}
	return sum
}

func syncedClock() *clock.Clock {
	c := clock.New(clock.Always(true))
	c.Check()
	return c
}

func TestOpenRetriedAndUnsyncedClockMarked(t *testing.T) {
	b := openBuffer(t)
	var attempts atomic.Int32
	opener := func(s drivers.Spec) (drivers.Sensor, error) {
		if attempts.Add(1) <= 2 {
			return nil, errors.New("no such device")
		}
		return drivers.Open(s, drivers.Env{})
	}
	runFor(t, 500*time.Millisecond, poller.Options{
		DeviceID: "pi-1",
		Sensors:  []drivers.Spec{{Name: "late", Driver: "sim", Interval: 50 * time.Millisecond}},
		Open:     opener,
		Buffer:   b,
		Clock:    clock.New(clock.Always(false)),
	})
	rs := all(t, b)
	if len(rs) < 4 {
		t.Fatalf("%d readings after the sensor appeared on the third try", len(rs))
	}
	for _, r := range rs {
		if r.TimeSynced {
			t.Fatal("reading marked time_synced while the clock is not")
		}
	}
	// The buffer keeps each one's boot stamp, for the correction.
	id, err := clock.BootID()
	if err != nil {
		t.Skipf("no boot id here (%v): readings are not boot-stamped", err)
	}
	stamped := 0
	if _, err := b.UpdateUnsynced(context.Background(), func(r *reading.Reading) bool {
		if r.Boot.ID == id && r.Boot.Since > 0 {
			stamped++
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	if stamped != len(rs) {
		t.Fatalf("%d of %d unsynced readings carry this boot's stamp", stamped, len(rs))
	}
}

// fullDisk is a buffer whose appends fail, as on a full SD card.
type fullDisk struct{ n atomic.Int32 }

func (f *fullDisk) Append(context.Context, ...*reading.Reading) error {
	f.n.Add(1)
	return errors.New("write buffer.db.wal: no space left on device")
}

// TestStoreFailuresAreNotSensorErrors: a reading that cannot be stored is
// counted in the store metric, not as the sensor's error (issue 11 item 6),
// and logged at most once a minute per sensor.
func TestStoreFailuresAreNotSensorErrors(t *testing.T) {
	disk := &fullDisk{}
	var logs testkit.LogBuffer
	errs := metricset.New().CounterVec("errors", "", "sensor", "class")
	storeErrs := vm.NewSet().NewCounter("store_errors")
	runFor(t, 500*time.Millisecond, poller.Options{
		DeviceID: "pi-1",
		Sensors: []drivers.Spec{
			{Name: "sim-1", Driver: "sim", Interval: 20 * time.Millisecond},
			{Name: "sim-2", Driver: "sim", Interval: 20 * time.Millisecond},
		},
		Open:    open(nil),
		Buffer:  disk,
		Clock:   syncedClock(),
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Metrics: poller.Metrics{Errors: errs, StoreErrors: storeErrs},
	})
	if got := storeErrs.Get(); got < 20 || int32(got) != disk.n.Load() {
		t.Fatalf("store errors metric = %v for %d failed appends", got, disk.n.Load())
	}
	for _, s := range []string{"sim-1", "sim-2"} {
		if got := sumErrors(errs, s); got != 0 {
			t.Errorf("%s: %v sensor errors for a full disk; the sensor is fine", s, got)
		}
	}
	if n := strings.Count(logs.String(), "store reading failed"); n != 2 {
		t.Fatalf("%d log lines for the full disk in 0.5s; want one per sensor:\n%s", n, logs.String())
	}
}

// stuckDisk is a buffer whose appends block, as a deadlock would, until
// released.
type stuckDisk struct {
	release chan struct{}
}

func (d *stuckDisk) Append(ctx context.Context, _ ...*reading.Reading) error {
	<-d.release
	return nil
}

// TestLivenessSeesAStuckLoop: a loop that polls on schedule is live, also
// when its sensor fails or the disk is full; a loop stuck in an append is
// reported by name once its interval, read timeout and slack have passed.
func TestLivenessSeesAStuckLoop(t *testing.T) {
	live := &poller.Liveness{Slack: 100 * time.Millisecond}
	disk := &stuckDisk{release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- poller.Run(ctx, poller.Options{
			DeviceID: "pi-1",
			Sensors: []drivers.Spec{
				{Name: "broken", Driver: "sim", Interval: 20 * time.Millisecond, FailRate: 1},
				{Name: "stuck", Driver: "sim", Interval: 20 * time.Millisecond},
			},
			Open: open(nil), Buffer: disk, Clock: syncedClock(), Liveness: live,
		})
	}()
	defer func() { close(disk.release); cancel(); <-done }()
	if err := live.Check(time.Now()); err != nil {
		t.Fatalf("Check at start = %v", err)
	}
	testkit.WaitFor(t, "the stuck loop to be reported", 5*time.Second, func() bool {
		err := live.Check(time.Now())
		return errors.Is(err, poller.ErrStuck) && strings.Contains(err.Error(), "sensor stuck ")
	})
}

// scriptSensor fails or succeeds as its script says, then succeeds. At
// the start of each Read it records how the health board sees it, which is
// the state the previous poll left (one loop polls a sensor in sequence),
// and it moves the fake wall clock to t0 + n minutes for read n, so the
// times the poller records are exact.
type scriptSensor struct {
	board  *health.Board
	wall   *atomic.Int64 // unix ns
	t0     time.Time
	script []error

	mu    sync.Mutex
	reads int
	seen  []health.Sensor
}

func (s *scriptSensor) Name() string { return "probe" }
func (s *scriptSensor) Kind() string { return "script" }
func (s *scriptSensor) Close() error { return nil }
func (s *scriptSensor) Read(ctx context.Context) (map[string]float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap, _ := s.board.Snapshot()
	s.seen = append(s.seen, snap["probe"])
	n := s.reads
	s.reads++
	s.wall.Store(s.t0.Add(time.Duration(n) * time.Minute).UnixNano())
	if n < len(s.script) && s.script[n] != nil {
		return nil, s.script[n]
	}
	return map[string]float64{reading.Temperature: 20}, nil
}

func (s *scriptSensor) seenN() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// TestHealthCountsFailuresAndKeepsLastGood: consecutive failures count up
// over failed opens and reads and reset on a good read; the last good
// read's time (by the poller's clock) is kept through later failures, the
// last failure's class through a recovery; errors are counted by class and
// no failed read is stored as a reading.
func TestHealthCountsFailuresAndKeepsLastGood(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var wall atomic.Int64
	wall.Store(t0.Add(-time.Minute).UnixNano()) // the failed open, before read 0
	clk := clock.New(clock.Always(true), clock.WithTime(
		func() time.Time { return time.Unix(0, wall.Load()).UTC() },
		func() time.Duration { return 0 }))
	clk.Check()
	board := &health.Board{}
	crc := fmt.Errorf("ds18b20 probe: %w", fault.Mark(fault.CRC, errors.New(`crc=a2 NO`)))
	sensor := &scriptSensor{board: board, wall: &wall, t0: t0, script: []error{
		crc, crc, fault.Mark(fault.Timeout, syscall.ETIMEDOUT), nil, fault.New(fault.PowerOn, "85 °C"), nil,
	}}
	opens := 0
	errs := metricset.New().CounterVec("errors", "", "sensor", "class")
	b := openBuffer(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- poller.Run(ctx, poller.Options{
			DeviceID: "pi-1",
			Sensors:  []drivers.Spec{{Name: "probe", Driver: "sim", Interval: 5 * time.Millisecond}},
			Open: func(drivers.Spec) (drivers.Sensor, error) {
				if opens++; opens == 1 {
					return nil, fmt.Errorf("sensor probe: %w", fault.New(fault.Absent, "no DS18B20 on the 1-Wire bus"))
				}
				return sensor, nil
			},
			Buffer: b, Clock: clk, Health: board,
			Metrics: poller.Metrics{Errors: errs},
		})
	}()
	testkit.WaitFor(t, "seven reads", 10*time.Second, func() bool { return sensor.seenN() >= 7 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	at := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	want := []health.Sensor{
		{State: "failing", ConsecutiveFailures: 1, LastErrorClass: fault.Absent, LastErrorAt: at(-1)},
		{State: "failing", ConsecutiveFailures: 2, LastErrorClass: fault.CRC, LastErrorAt: at(0)},
		{State: "failing", ConsecutiveFailures: 3, LastErrorClass: fault.CRC, LastErrorAt: at(1)},
		{State: "failing", ConsecutiveFailures: 4, LastErrorClass: fault.Timeout, LastErrorAt: at(2)},
		{State: "ok", ConsecutiveFailures: 0, LastGood: at(3), LastErrorClass: fault.Timeout, LastErrorAt: at(2)},
		{State: "failing", ConsecutiveFailures: 1, LastGood: at(3), LastErrorClass: fault.PowerOn, LastErrorAt: at(4)},
		{State: "ok", ConsecutiveFailures: 0, LastGood: at(5), LastErrorClass: fault.PowerOn, LastErrorAt: at(4)},
	}
	sensor.mu.Lock()
	seen := sensor.seen
	sensor.mu.Unlock()
	for i, w := range want {
		got := seen[i]
		got.LastError = "" // the message is the error's, tested in agent/health
		if got != w {
			t.Errorf("before read %d: %+v\n          want %+v", i, got, w)
		}
	}
	for class, n := range map[fault.Class]uint64{fault.Absent: 1, fault.CRC: 2, fault.Timeout: 1, fault.PowerOn: 1, fault.OutOfRange: 0, fault.Other: 0} {
		if got := errs.With("probe", string(class)).Get(); got != n {
			t.Errorf("errors{class=%s} = %v, want %v", class, got, n)
		}
	}
	// Only good reads became readings, stamped by the same clock.
	for _, r := range all(t, b) {
		if !r.TS.Equal(at(3)) && r.TS.Before(at(5)) {
			t.Errorf("a reading stamped %v, when read %d failed", r.TS, int(r.TS.Sub(t0)/time.Minute))
		}
	}
	if n := len(all(t, b)); n < 2 {
		t.Errorf("%d readings stored; reads 3 and 5 were good", n)
	}
}
