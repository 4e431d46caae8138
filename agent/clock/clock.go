// Package clock tells the agent whether the wall clock can be trusted,
// stamps each reading so that its time can be corrected later, and says
// how long a reading must wait for that correction before it is published.
//
// A Raspberry Pi has no real-time clock: until NTP sets it, the wall clock
// reads 1970 or whatever fake-hwclock saved at the last shutdown, and it
// jumps when NTP steps it, often minutes after boot. While the kernel says
// the clock is unsynchronised (adjtimex: STA_UNSYNC set, or maxerror at
// its 16 s ceiling), a reading gets:
//
//   - ts: the wall time at boot as estimated at start plus the time since
//     boot, so the readings of one boot lie on one continuous line even if
//     something steps the clock meanwhile; time_synced false;
//   - a boot stamp (reading.BootStamp): the kernel's boot id and the time
//     since boot from CLOCK_BOOTTIME, a clock that starts at boot and that
//     no one sets. The buffer keeps it with the reading.
//
// Once the kernel reports the clock synced, the true wall time at boot is
// known (the wall clock minus the time since boot), and Correct turns any
// stamped reading of this boot into its true time: readings taken by this
// process, by an earlier run of the agent in the same boot (a crash, an
// upgrade, the watchdog), and readings taken before the sync but appended
// after it. Readings of an earlier boot cannot be placed (that boot's
// start is unknown): they keep time_synced false.
//
// Held tells the buffer to hold a stamped reading of this boot back from
// publishing for up to the hold (clock.hold_unsynced, default 10 minutes)
// after it was taken, so that it can be corrected first; past that it goes
// out as it is, flagged. Durations are measured on CLOCK_BOOTTIME, so a
// wall clock stepped backwards after the sync shortens or stretches
// nothing.
//
//	c := clock.New(clock.Kernel{})
//	s := c.Stamp()         // s.TS, s.Synced, s.Boot
//	became, err := c.Check() // every few seconds; once true, correct the buffer with c.Correct
package clock

import (
	"sync"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// DefaultHold is how long an unsynced reading of this boot waits for the
// clock to sync before it is published as it is (clock.hold_unsynced).
const DefaultHold = 10 * time.Minute

// Source reports whether the system clock is synchronised (by NTP).
type Source interface {
	Synced() (bool, error)
}

// Stamp is when a reading was taken.
type Stamp struct {
	TS     time.Time // UTC; the true time if Synced
	Synced bool
	// Boot is set while the clock is not synced (and the boot id is
	// known): what Correct needs later.
	Boot reading.BootStamp
}

// Clock stamps readings. Its zero value is not usable; call New.
type Clock struct {
	src     Source
	wall    func() time.Time     // wall clock, without monotonic reading
	boot    func() time.Duration // time since boot (CLOCK_BOOTTIME)
	bootID  [16]byte             // zero: unknown, readings are not stamped
	bootErr error
	hold    time.Duration

	mu       sync.Mutex
	zeroWall time.Time // wall time at boot as estimated at New (maybe wrong)
	synced   bool
	trueZero time.Time // true wall time at boot, once synced
}

// Option changes how a Clock reads time; tests use them to step the clock.
type Option func(*Clock)

// WithTime replaces the wall clock and the time since boot (CLOCK_BOOTTIME).
func WithTime(wall func() time.Time, sinceBoot func() time.Duration) Option {
	return func(c *Clock) { c.wall, c.boot = wall, sinceBoot }
}

// WithBootID replaces the kernel's boot id.
func WithBootID(id [16]byte) Option {
	return func(c *Clock) { c.bootID, c.bootErr = id, nil }
}

// WithHold sets how long Held holds a stamped reading back; 0 disables
// the hold. The default is DefaultHold.
func WithHold(d time.Duration) Option {
	return func(c *Clock) { c.hold = d }
}

// New returns a Clock that asks src whether the clock is synced. It does
// not check yet; call Check (the agent does it every few seconds).
func New(src Source, opts ...Option) *Clock {
	c := &Clock{
		src:  src,
		wall: func() time.Time { return time.Now().Round(0) },
		boot: SinceBoot,
		hold: DefaultHold,
	}
	c.bootID, c.bootErr = BootID()
	for _, o := range opts {
		o(c)
	}
	c.zeroWall = c.wall().Add(-c.boot())
	return c
}

// BootIDErr is why readings are not boot-stamped (no boot id), or nil.
func (c *Clock) BootIDErr() error { return c.bootErr }

// Now returns the timestamp for a reading taken now, in UTC, and whether
// the wall clock was synced.
func (c *Clock) Now() (time.Time, bool) {
	s := c.Stamp()
	return s.TS, s.Synced
}

// Stamp returns the timestamp for a reading taken now, whether the clock
// is synced, and while it is not, the boot stamp that corrects it later.
func (c *Clock) Stamp() Stamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced {
		return Stamp{TS: c.wall().UTC(), Synced: true}
	}
	since := c.boot()
	s := Stamp{TS: c.zeroWall.Add(since).UTC()}
	if c.bootID != [16]byte{} {
		s.Boot = reading.BootStamp{ID: c.bootID, Since: since}
	}
	return s
}

// Check asks the Source and returns true exactly once: on the call that sees
// the clock synced for the first time. Later unsynced reports are ignored
// (a synced clock that loses NTP is still far better than our timeline).
func (c *Clock) Check() (becameSynced bool, err error) {
	if c.Synced() {
		return false, nil
	}
	ok, err := c.src.Synced()
	if err != nil || !ok {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced {
		return false, nil
	}
	c.trueZero = c.wall().Add(-c.boot())
	c.synced = true
	return true, nil
}

// Synced reports whether Check has seen the clock synced.
func (c *Clock) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// Offset is the step between the unsynced timeline of this run and the
// true time; zero until the clock is synced.
func (c *Clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.synced {
		return 0
	}
	return c.trueZero.Sub(c.zeroWall)
}

// BootTime is when the machine booted: by the true time once the clock is
// synced, by the wall clock at New before that.
func (c *Clock) BootTime() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced {
		return c.trueZero
	}
	return c.zeroWall
}

// Correct gives r its true time if it was stamped in this boot while the
// clock was not synced and the clock is synced now, and reports whether it
// changed r (the agent passes it to buffer.UpdateUnsynced). The boot stamp
// goes: it has done its job.
func (c *Clock) Correct(r *reading.Reading) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.synced || r.TimeSynced || r.Boot.IsZero() || r.Boot.ID != c.bootID {
		return false
	}
	r.TS = c.trueZero.Add(r.Boot.Since).UTC()
	r.TimeSynced = true
	r.Boot = reading.BootStamp{}
	return true
}

// Held is how much longer a reading must be held back from publishing so
// that Correct can still fix it: the rest of the hold for a reading stamped
// in this boot, and 0 (publish) for a synced reading, one without a stamp,
// or one from an earlier boot (which nothing can correct). It has the
// signature of buffer.Options.Hold.
func (c *Clock) Held(synced bool, b reading.BootStamp) time.Duration {
	if synced || b.IsZero() || b.ID != c.bootID || c.hold <= 0 {
		return 0
	}
	age := max(c.boot()-b.Since, 0) // CLOCK_BOOTTIME only moves forward; guard anyway
	return max(c.hold-age, 0)
}

// Always is a Source for a clock known to be right (tests, non-Linux hosts).
type Always bool

// Synced returns the value of a.
func (a Always) Synced() (bool, error) { return bool(a), nil }
