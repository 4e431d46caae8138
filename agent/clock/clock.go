// Package clock tells the agent whether the wall clock can be trusted and
// gives each reading a timestamp that can be corrected later.
//
// A Raspberry Pi has no real-time clock: until NTP sets it, time.Now() is
// 1970 or whatever fake-hwclock saved at the last shutdown, and it jumps when
// NTP steps it. While the kernel says the clock is unsynchronised (adjtimex:
// STA_UNSYNC set, or maxerror at its 16 s ceiling), Now returns the wall time
// seen at start plus the monotonic time elapsed since, marked unsynced, so
// the readings of one run lie on one continuous timeline. Once the kernel
// reports the clock synced, Offset gives the step between that timeline and
// the true wall clock, which the agent adds to readings still in the buffer.
//
// It does not correct readings taken by an earlier run of the program (their
// monotonic reference is gone); those keep time_synced=false.
//
//	c := clock.New(clock.Kernel{})
//	ts, synced := c.Now()
package clock

import (
	"sync"
	"time"
)

// Source reports whether the system clock is synchronised (by NTP).
type Source interface {
	Synced() (bool, error)
}

// Clock stamps readings. Its zero value is not usable; call New.
type Clock struct {
	src  Source
	wall func() time.Time     // wall clock, without monotonic reading
	mono func() time.Duration // monotonic time since start

	mu       sync.Mutex
	bootWall time.Time // wall time at start as seen then (maybe wrong)
	synced   bool
	offset   time.Duration // true boot wall - bootWall, valid once synced
}

// Option changes how a Clock reads time; tests use it to step the clock.
type Option func(*Clock)

// WithTime replaces the wall and monotonic time sources.
func WithTime(wall func() time.Time, mono func() time.Duration) Option {
	return func(c *Clock) { c.wall, c.mono = wall, mono }
}

// New returns a Clock that asks src whether the clock is synced. It does
// not check yet; call Check (the agent does it every few seconds).
func New(src Source, opts ...Option) *Clock {
	start := time.Now()
	c := &Clock{
		src:  src,
		wall: func() time.Time { return time.Now().Round(0) },
		mono: func() time.Duration { return time.Since(start) },
	}
	for _, o := range opts {
		o(c)
	}
	c.bootWall = c.wall().Add(-c.mono())
	return c
}

// Now returns the timestamp for a reading taken now, in UTC, and whether
// the wall clock was synced.
func (c *Clock) Now() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced {
		return c.wall().UTC(), true
	}
	return c.bootWall.Add(c.mono()).UTC(), false
}

// Check asks the Source and returns true exactly once: on the call that sees
// the clock synced for the first time. Later unsynced reports are ignored
// (a synced clock that loses NTP is still far better than our timeline).
func (c *Clock) Check() (becameSynced bool, err error) {
	c.mu.Lock()
	if c.synced {
		c.mu.Unlock()
		return false, nil
	}
	c.mu.Unlock()
	ok, err := c.src.Synced()
	if err != nil || !ok {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced {
		return false, nil
	}
	trueBoot := c.wall().Add(-c.mono())
	c.offset = trueBoot.Sub(c.bootWall)
	c.synced = true
	return true, nil
}

// Synced reports whether Check has seen the clock synced.
func (c *Clock) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// Offset is what to add to an unsynced timestamp from this run to get the
// true time. It is zero until the clock is synced.
func (c *Clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

// Always is a Source for a clock known to be right (tests, non-Linux hosts).
type Always bool

// Synced returns the value of a.
func (a Always) Synced() (bool, error) { return bool(a), nil }
