// Package sim is a simulated sensor for demos and tests: smooth, plausible,
// seedable values and optional injected failures, with no hardware and no
// sleeping.
//
// Values follow a daily sine on the clock's time of day plus a slow random
// walk, so a dashboard shows a believable curve:
//
//	s := sim.New("sim-1", sim.Opts{Seed: 42, FailRate: 0.05})
//	v, err := s.Read(ctx) // {"temperature_c": 18.7, "humidity_pct": 61.2, "pressure_hpa": 1012.4}
//
// It does not model any real chip's noise or error behaviour.
package sim

import (
	"context"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Opts configures a simulated sensor. The zero value is usable.
type Opts struct {
	// Seed makes the sequence reproducible: two sensors with the same seed
	// and the same clock readings return the same values. 0 derives a seed
	// from the sensor name, so two sims with different names differ.
	Seed int64
	// FailRate is the probability (0..1) that a Read returns ErrInjected.
	FailRate float64
	// Now is the clock; nil means time.Now. Tests pass a fake clock.
	Now func() time.Time
}

// Sensor is a simulated temperature/humidity/pressure sensor. It is not
// safe for concurrent Reads (the agent never does that).
type Sensor struct {
	name string
	opts Opts
	rng  *rand.Rand
	// Slow random walks (AR(1)) added to the daily curves.
	tWalk, hWalk, pWalk float64
}

// New returns a simulated sensor named name.
func New(name string, opts Opts) *Sensor {
	seed := opts.Seed
	if seed == 0 {
		h := fnv.New64a()
		h.Write([]byte(name))
		seed = int64(h.Sum64())
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Sensor{
		name: name,
		opts: opts,
		rng:  rand.New(rand.NewPCG(uint64(seed), 0x5eed5eed)),
	}
}

// Name returns the configured name.
func (s *Sensor) Name() string { return s.name }

// Kind returns "sim".
func (s *Sensor) Kind() string { return "sim" }

// Read returns the next simulated values, or ErrInjected with probability
// FailRate. It never blocks.
func (s *Sensor) Read(ctx context.Context) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v := make(map[string]float64, 3)
	if err := s.read(v); err != nil {
		return nil, err
	}
	return v, nil
}

func (s *Sensor) read(v map[string]float64) error {
	// Draw the same number of random numbers whether or not this read fails,
	// so FailRate does not change the value sequence of a seed.
	fail := s.rng.Float64() < s.opts.FailRate
	s.tWalk = 0.95*s.tWalk + 0.05*s.rng.NormFloat64()
	s.hWalk = 0.95*s.hWalk + 0.05*s.rng.NormFloat64()
	s.pWalk = 0.98*s.pWalk + 0.05*s.rng.NormFloat64()
	if fail {
		return ErrInjected
	}
	now := s.opts.Now()
	// Phase of the day: coldest around 04:00, warmest around 16:00.
	h, m, sec := now.Clock()
	day := (float64(h)*3600 + float64(m)*60 + float64(sec) + float64(now.Nanosecond())/1e9) / 86400
	daily := math.Sin(2 * math.Pi * (day - 10.0/24))
	// Pressure drifts over a few days rather than with the sun.
	weather := math.Sin(2 * math.Pi * float64(now.Unix()) / (3.7 * 86400))

	v[reading.Temperature] = round(18+6*daily+s.tWalk, 100)
	v[reading.Humidity] = round(clamp(60-18*daily+4*s.hWalk, 0, 100), 10)
	v[reading.Pressure] = round(1013+6*weather+s.pWalk, 100)
	return nil
}

// Close does nothing.
func (s *Sensor) Close() error { return nil }

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

// round keeps the precision a real sensor reports (1/scale).
func round(x, scale float64) float64 { return math.Round(x*scale) / scale }
