// Package deadband decides which of a sensor's readings are worth storing:
// report by exception. A reading whose every value moved less than its
// deadband since the last reading stored for that sensor is suppressed; one
// is stored at least every MaxSilence all the same, so a quiet sensor still
// shows it is alive.
//
// Values are compared with the last STORED reading, not the last taken, so
// a slow drift cannot creep past the deadband a step at a time: every value
// a consumer does not see is within its deadband of the stored reading
// before it. A value the deadband does not list is compared exactly (any
// change stores the reading), and a value that appears or disappears
// stores it too, so nothing unlisted is ever lost.
//
// A Filter holds one sensor's state in memory: it starts empty, so the
// first reading after a start (or a config reload) is always stored. It
// does not store or count anything itself; the poller does (agent/poller).
//
//	f := deadband.New(deadband.Options{Bands: map[string]float64{"temperature_c": 0.1}})
//	if !f.Suppress(vals) {
//		store(vals)   // and only once it is stored:
//		f.Stored(vals)
//	}
package deadband

import (
	"math"
	"time"
)

// DefaultMaxSilence is Options.MaxSilence when it is zero: the longest a
// sensor with a deadband stays without a stored reading.
const DefaultMaxSilence = 5 * time.Minute

// Options configures a Filter.
type Options struct {
	// Bands maps a value key (temperature_c) to the amount it must move,
	// at least, for the reading to be stored. 0 suppresses only exact
	// repeats. Amounts are not negative (the config checks them).
	Bands map[string]float64
	// MaxSilence is the longest time between two stored readings; zero
	// means DefaultMaxSilence.
	MaxSilence time.Duration
	// Now is the clock MaxSilence is measured on; nil means time.Now (its
	// monotonic reading, so an NTP step does not force or delay a store).
	Now func() time.Time
}

// Filter is one sensor's deadband state. It is not safe for concurrent
// use: each sensor loop owns its own.
type Filter struct {
	o          Options
	last       map[string]float64 // the last stored values; nil before the first
	lastStored time.Time
}

// New returns a Filter that has stored nothing yet.
func New(o Options) *Filter {
	if o.MaxSilence <= 0 {
		o.MaxSilence = DefaultMaxSilence
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Filter{o: o}
}

// Suppress reports whether vals may be left unstored: a reading has been
// stored, less than MaxSilence ago, and every value of vals is within its
// deadband of it (an unlisted value equal to it), with the same keys.
// It changes nothing; call Stored once the reading is stored.
func (f *Filter) Suppress(vals map[string]float64) bool {
	if f.last == nil || len(vals) != len(f.last) {
		return false
	}
	if f.o.Now().Sub(f.lastStored) >= f.o.MaxSilence {
		return false
	}
	for k, v := range vals {
		prev, ok := f.last[k]
		if !ok || !Within(v, prev, f.o.Bands[k]) {
			return false
		}
	}
	return true
}

// Stored records vals as the sensor's last stored reading, now. The poller
// calls it only after the buffer took the reading: one the buffer refused
// must not become the reference a later reading is compared with.
func (f *Filter) Stored(vals map[string]float64) {
	last := make(map[string]float64, len(vals))
	for k, v := range vals {
		last[k] = v
	}
	f.last = last
	f.lastStored = f.o.Now()
}

// Within reports whether v is close enough to the stored ref to be
// suppressed under deadband band: |v-ref| < band, or v == ref (so a band
// of 0 lets through only exact repeats). This is the promise a consumer
// can rely on: a value it never saw was Within its deadband of the last
// value it saw.
func Within(v, ref, band float64) bool {
	return v == ref || math.Abs(v-ref) < band
}
