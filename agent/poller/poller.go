// Package poller reads each configured sensor on its own schedule and
// appends every good reading to the buffer.
//
// Each sensor has its own goroutine and a timer aligned to multiples of its
// interval (a 10s sensor reads at :00, :10, :20 ...), so the schedule never
// drifts, one sensor's reads never overlap, and a slow or hung sensor only
// delays itself: when a read overruns, the ticks it missed are skipped.
// Reads have a timeout of one interval (at most 30s). Errors are counted per
// sensor and fault class (drivers/fault; a reading the buffer refuses is
// counted apart, as a store error), recorded in a health.Board with the
// last good read's time, and logged at most once a minute per sensor. A
// sensor that fails to open is retried on its schedule.
//
// A sensor with a deadband (agent/deadband) stores only the readings that
// moved past it, and one at least every max_silence; the others are
// counted as suppressed and never reach the Appender, so they take no seq
// and a gap in the seqs still means a loss. The deadband state lives in
// the sensor's loop: a start or a reload stores the first reading.
//
// It does not publish or store anything itself: readings go to an Appender.
//
//	err := poller.Run(ctx, poller.Options{DeviceID: "pi-1", Sensors: cfg.Sensors,
//		Open: open, Buffer: buf, Clock: clk})
package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"golang.org/x/sync/errgroup"

	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/agent/deadband"
	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/buffer/metricset"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers"
	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// Appender stores readings durably (the buffer).
type Appender interface {
	Append(ctx context.Context, rs ...*reading.Reading) error
}

// Clock stamps readings (agent/clock): the time, whether the clock is
// synced, and while it is not, the boot stamp that corrects it later.
type Clock interface {
	Stamp() clock.Stamp
}

// Options configures Run.
type Options struct {
	DeviceID string
	Sensors  []drivers.Spec
	Open     func(drivers.Spec) (drivers.Sensor, error)
	Buffer   Appender
	Clock    Clock
	Logger   *slog.Logger // nil: discard
	Metrics  Metrics
	// ErrorLogEvery limits error logs per sensor; default 1 minute.
	ErrorLogEvery time.Duration
	// MaxReadTimeout caps the per-read timeout (one interval); default 30s.
	MaxReadTimeout time.Duration
	// Liveness, when set, records every loop's ticks, for the watchdog.
	Liveness *Liveness
	// Health, when set, records each sensor's good reads and failures
	// (with their fault class), for the metrics and the status message.
	Health *health.Board
}

// Liveness tells whether every sensor loop still ticks: a loop that has not
// finished a poll within its interval, its read timeout and Slack is stuck
// (a deadlock, or a driver that ignores its context). Share one across the
// Runs of a process (a reload starts a new Run). The zero value is ready.
type Liveness struct {
	// Slack is what an append may add to a poll (an fsync on an SD card).
	// Zero means 1 minute.
	Slack time.Duration

	mu    sync.Mutex
	loops map[*sensorLoop]*beat
}

type beat struct {
	name    string
	last    time.Time
	allowed time.Duration
}

func (l *Liveness) begin(s *sensorLoop, allowed time.Duration) {
	if l == nil {
		return
	}
	slack := l.Slack
	if slack <= 0 {
		slack = time.Minute
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.loops == nil {
		l.loops = map[*sensorLoop]*beat{}
	}
	l.loops[s] = &beat{name: s.spec.Name, last: time.Now(), allowed: allowed + slack}
}

func (l *Liveness) tick(s *sensorLoop) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.loops[s]; b != nil {
		b.last = time.Now()
	}
}

func (l *Liveness) end(s *sensorLoop) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.loops, s)
}

// Check returns an error naming a sensor loop that has not ticked within
// its allowance at now, or nil.
func (l *Liveness) Check(now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.loops {
		if d := now.Sub(b.last); d > b.allowed {
			return fmt.Errorf("%w: sensor %s has not finished a poll for %v", ErrStuck, b.name, d.Round(time.Millisecond))
		}
	}
	return nil
}

// ErrStuck is wrapped by Liveness.Check's reports.
var ErrStuck = errors.New("poll loop stuck")

// Metrics are counted per sensor name; nil fields are not updated.
type Metrics struct {
	Readings *metricset.CounterVec // label "sensor": good readings stored; each sensor's from the start, at 0
	// Errors counts failed opens and reads by the labels "sensor" and
	// "class" (drivers/fault: absent, crc, timeout, ...); every class of
	// every sensor is there from the start, at 0.
	Errors *metricset.CounterVec
	// StoreErrors counts readings taken but not stored (the buffer refused
	// the append: disk full, I/O error). They are not the sensor's fault.
	StoreErrors *vm.Counter
	// Suppressed counts good readings a sensor's deadband kept out of the
	// buffer, by the label "sensor"; each sensor with a deadband is there
	// from the start, at 0.
	Suppressed *metricset.CounterVec
}

// Run polls every sensor until ctx is cancelled, then closes the sensors
// and returns nil. Sensor errors never end Run.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ErrorLogEvery <= 0 {
		o.ErrorLogEvery = time.Minute
	}
	if o.MaxReadTimeout <= 0 {
		o.MaxReadTimeout = 30 * time.Second
	}
	names := make([]string, len(o.Sensors))
	for i, spec := range o.Sensors {
		names[i] = spec.Name
	}
	o.Health.Track(names)
	g, ctx := errgroup.WithContext(ctx)
	for _, spec := range o.Sensors {
		s := &sensorLoop{o: &o, spec: spec, log: o.Logger.With("sensor", spec.Name)}
		if o.Metrics.Readings != nil {
			s.readings = o.Metrics.Readings.With(spec.Name)
		}
		if len(spec.Deadband) > 0 {
			s.filter = deadband.New(deadband.Options{Bands: spec.Deadband, MaxSilence: spec.MaxSilence})
			if o.Metrics.Suppressed != nil {
				s.suppressedReadings = o.Metrics.Suppressed.With(spec.Name)
			}
		}
		if o.Metrics.Errors != nil {
			s.errors = map[fault.Class]*vm.Counter{}
			for _, c := range fault.Classes() {
				s.errors[c] = o.Metrics.Errors.With(spec.Name, string(c))
			}
		}
		g.Go(func() error { s.run(ctx); return nil })
	}
	return g.Wait()
}

type sensorLoop struct {
	o        *Options
	spec     drivers.Spec
	log      *slog.Logger
	readings *vm.Counter
	errors   map[fault.Class]*vm.Counter // every class of fault.Classes; nil: not counted
	sensor   drivers.Sensor

	filter             *deadband.Filter // nil: no deadband, every reading is stored
	suppressedReadings *vm.Counter

	failing    bool
	lastLog    time.Time
	suppressed int
}

// nextTick returns the first multiple of interval after now.
func nextTick(now time.Time, interval time.Duration) time.Time {
	return now.Truncate(interval).Add(interval)
}

func (s *sensorLoop) run(ctx context.Context) {
	defer func() {
		if s.sensor != nil {
			if err := s.sensor.Close(); err != nil {
				s.log.Warn("close sensor", "err", err)
			}
		}
	}()
	iv := s.spec.Interval
	s.o.Liveness.begin(s, iv+min(iv, s.o.MaxReadTimeout))
	defer s.o.Liveness.end(s)
	next := nextTick(time.Now(), iv)
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		s.poll(ctx)
		s.o.Liveness.tick(s)
		now := time.Now()
		next = next.Add(iv)
		if wait := next.Sub(now); wait <= 0 || wait > iv {
			// The read overran (skip the missed ticks) or the wall clock
			// was stepped: realign to the next multiple.
			next = nextTick(now, iv)
		}
		timer.Reset(time.Until(next))
	}
}

func (s *sensorLoop) poll(ctx context.Context) {
	if s.sensor == nil {
		sn, err := s.o.Open(s.spec)
		if err != nil {
			s.fail("open sensor", err)
			return
		}
		s.sensor = sn
		s.log.Info("sensor opened", "kind", sn.Kind(), "interval", s.spec.Interval.String())
	}
	rctx, cancel := context.WithTimeout(ctx, min(s.spec.Interval, s.o.MaxReadTimeout))
	vals, err := s.sensor.Read(rctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.fail("read sensor", err)
		return
	}
	st := s.o.Clock.Stamp()
	s.o.Health.Good(s.spec.Name, st.TS)
	if s.filter != nil && s.filter.Suppress(vals) {
		if s.suppressedReadings != nil {
			s.suppressedReadings.Inc()
		}
		s.o.Health.Suppressed(s.spec.Name)
		return
	}
	r := &reading.Reading{
		DeviceID: s.o.DeviceID, Sensor: s.spec.Name, Kind: s.sensor.Kind(),
		TS: st.TS, TimeSynced: st.Synced, Boot: st.Boot, Values: vals,
	}
	// The append is not cancelled by ctx: a reading taken is stored.
	if err := s.o.Buffer.Append(context.WithoutCancel(ctx), r); err != nil {
		if ctx.Err() != nil {
			return
		}
		if c := s.o.Metrics.StoreErrors; c != nil {
			c.Inc()
		}
		s.logFailure("store reading", err)
		return
	}
	if s.filter != nil {
		s.filter.Stored(vals)
	}
	if s.readings != nil {
		s.readings.Inc()
	}
	if s.failing {
		// Logged at the first reading stored: one within the deadband
		// proves the sensor, not the buffer, which may be what failed.
		s.failing = false
		s.log.Info("sensor recovered", "seq", r.Seq, "errors_not_logged", s.suppressed)
		s.suppressed = 0
	}
}

// fail counts a sensor error by class, records it in the health board and
// logs it unless this sensor logged one within ErrorLogEvery, so a
// disconnected sensor at 1 Hz does not flood the journal.
func (s *sensorLoop) fail(what string, err error) {
	at := s.o.Clock.Stamp().TS
	class := s.o.Health.Fail(s.spec.Name, at, err)
	if s.errors != nil {
		c := s.errors[class]
		if c == nil { // a class fault.Classes does not list
			c = s.o.Metrics.Errors.With(s.spec.Name, string(class))
		}
		c.Inc()
	}
	s.logFailure(what, err, "class", string(class))
}

// logFailure logs a failure at most once per ErrorLogEvery for this sensor.
func (s *sensorLoop) logFailure(what string, err error, attrs ...any) {
	now := time.Now()
	if s.failing && now.Sub(s.lastLog) < s.o.ErrorLogEvery {
		s.suppressed++
		return
	}
	s.log.Warn(what+" failed", append([]any{"err", err}, append(attrs, "errors_not_logged", s.suppressed,
		"next_log_in", fmt.Sprint(s.o.ErrorLogEvery))...)...)
	s.failing = true
	s.lastLog = now
	s.suppressed = 0
}
