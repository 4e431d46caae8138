package deadband

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// fakeClock is the injected clock: it moves only when the test says.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *fakeClock               { return &fakeClock{t: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)} }
func vals(kv ...any) map[string]float64 {
	m := map[string]float64{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1].(float64)
	}
	return m
}

func TestSuppress(t *testing.T) {
	bands := map[string]float64{"temperature_c": 0.1, "humidity_pct": 1}
	stored := vals("temperature_c", 20.0, "humidity_pct", 50.0)
	for _, tc := range []struct {
		name  string
		bands map[string]float64
		after time.Duration
		next  map[string]float64
		want  bool
	}{
		{"unchanged", bands, time.Second, vals("temperature_c", 20.0, "humidity_pct", 50.0), true},
		{"every value inside its band", bands, time.Second, vals("temperature_c", 20.09, "humidity_pct", 49.1), true},
		{"one value at its band stores", bands, time.Second, vals("temperature_c", 20.1, "humidity_pct", 50.0), false},
		{"one value past its band downwards", bands, time.Second, vals("temperature_c", 19.85, "humidity_pct", 50.0), false},
		{"other value past its band", bands, time.Second, vals("temperature_c", 20.0, "humidity_pct", 51.5), false},
		{"unlisted value unchanged", map[string]float64{"temperature_c": 0.1}, time.Second, vals("temperature_c", 20.05, "humidity_pct", 50.0), true},
		{"unlisted value changed stores", map[string]float64{"temperature_c": 0.1}, time.Second, vals("temperature_c", 20.0, "humidity_pct", 50.01), false},
		{"band 0: an exact repeat is suppressed", map[string]float64{"temperature_c": 0, "humidity_pct": 0}, time.Second, vals("temperature_c", 20.0, "humidity_pct", 50.0), true},
		{"band 0: any change stores", map[string]float64{"temperature_c": 0, "humidity_pct": 0}, time.Second, vals("temperature_c", 20.0001, "humidity_pct", 50.0), false},
		{"a value disappears", bands, time.Second, vals("temperature_c", 20.0), false},
		{"a value is replaced by another", bands, time.Second, vals("temperature_c", 20.0, "pressure_hpa", 1000.0), false},
		{"a value appears", bands, time.Second, vals("temperature_c", 20.0, "humidity_pct", 50.0, "pressure_hpa", 1000.0), false},
		{"just before max_silence", bands, 5*time.Minute - time.Nanosecond, vals("temperature_c", 20.0, "humidity_pct", 50.0), true},
		{"max_silence forces a store", bands, 5 * time.Minute, vals("temperature_c", 20.0, "humidity_pct", 50.0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			f := New(Options{Bands: tc.bands, Now: clk.now})
			if f.Suppress(stored) {
				t.Fatal("the first reading was suppressed; it must always be stored")
			}
			f.Stored(stored)
			clk.add(tc.after)
			if got := f.Suppress(tc.next); got != tc.want {
				t.Errorf("Suppress(%v) after %v = %v, want %v", tc.next, tc.after, got, tc.want)
			}
		})
	}
}

// A reading the buffer refused is not Stored: the next one is compared
// with the last one that really was stored.
func TestSuppressComparesWithLastStored(t *testing.T) {
	clk := newClock()
	f := New(Options{Bands: map[string]float64{"temperature_c": 0.1}, Now: clk.now})
	f.Stored(vals("temperature_c", 20.0))
	// Creeping by 0.06 a step: each step is inside the band of the one
	// before, but the second is not inside the band of the stored one.
	clk.add(time.Second)
	if !f.Suppress(vals("temperature_c", 20.06)) {
		t.Fatal("20.06 after a stored 20.00 was stored with a band of 0.1")
	}
	clk.add(time.Second)
	if f.Suppress(vals("temperature_c", 20.12)) {
		t.Fatal("20.12 after a stored 20.00 was suppressed: the drift crept past the band")
	}
	// Not Stored (the buffer refused it): the reference stays 20.00.
	clk.add(time.Second)
	if !f.Suppress(vals("temperature_c", 20.05)) {
		t.Fatal("the reference moved to a reading that was never stored")
	}
}

func TestDefaultMaxSilence(t *testing.T) {
	clk := newClock()
	f := New(Options{Bands: map[string]float64{"temperature_c": 1}, Now: clk.now})
	f.Stored(vals("temperature_c", 20.0))
	clk.add(DefaultMaxSilence - time.Second)
	if !f.Suppress(vals("temperature_c", 20.0)) {
		t.Fatal("suppression ended before the default max_silence")
	}
	clk.add(time.Second)
	if f.Suppress(vals("temperature_c", 20.0)) {
		t.Fatalf("no store forced after the default max_silence %v", DefaultMaxSilence)
	}
}

// step is one reading of a simulated run: when it was taken, its values
// and whether the filter let it through.
type step struct {
	at     time.Time
	vals   map[string]float64
	stored bool
}

// run feeds n readings, one every interval, from signal through a filter,
// storing every reading it does not suppress.
func run(o Options, clk *fakeClock, n int, interval time.Duration, signal func(i int) map[string]float64) []step {
	o.Now = clk.now
	f := New(o)
	out := make([]step, 0, n)
	for i := range n {
		v := signal(i)
		s := step{at: clk.now(), vals: v, stored: !f.Suppress(v)}
		if s.stored {
			f.Stored(v)
		}
		out = append(out, s)
		clk.add(interval)
	}
	return out
}

// A simulated BME280 at 1 Hz for six hours: a slow daily swing with noise
// on temperature and humidity, and pressure left unlisted but held steady
// at the chip's resolution most of the time. The test plays the consumer:
// from the stored readings alone it rebuilds every reading taken, and each
// rebuilt value is within its deadband of the truth.
func TestSimulatedSignal(t *testing.T) {
	bands := map[string]float64{"temperature_c": 0.1, "humidity_pct": 1}
	const maxSilence = 2 * time.Minute
	rng := rand.New(rand.NewPCG(1, 2))
	q := func(v, step float64) float64 { return math.Round(v/step) * step }
	signal := func(i int) map[string]float64 {
		h := float64(i) / 3600
		return map[string]float64{
			"temperature_c": q(21+2*math.Sin(2*math.Pi*h/24)+rng.NormFloat64()*0.02, 0.01),
			"humidity_pct":  q(50-5*math.Sin(2*math.Pi*h/24)+rng.NormFloat64()*0.2, 0.1),
			"pressure_hpa":  q(1008+float64(i/1800)*0.5, 0.5), // moves every half hour
		}
	}
	const n = 6 * 3600
	steps := run(Options{Bands: bands, MaxSilence: maxSilence}, newClock(), n, time.Second, signal)

	stored, suppressed := 0, 0
	var last step
	for i, s := range steps {
		if i == 0 && !s.stored {
			t.Fatal("the first reading was not stored")
		}
		if s.stored {
			if i > 0 && s.at.Sub(last.at) > maxSilence {
				t.Fatalf("reading %d: %v without a stored reading, max_silence is %v", i, s.at.Sub(last.at), maxSilence)
			}
			stored++
			last = s
			continue
		}
		suppressed++
		// The consumer's rebuild: the last stored reading before it.
		for k, v := range s.vals {
			got, ok := last.vals[k]
			if !ok {
				t.Fatalf("reading %d: %s suppressed but absent from the stored reading before it", i, k)
			}
			if b := bands[k]; !(math.Abs(v-got) < b || v == got) {
				t.Fatalf("reading %d: %s taken %v, rebuilt %v from the reading stored at %v: off by more than the deadband %v",
					i, k, v, got, last.at, b)
			}
		}
	}
	if stored+suppressed != n {
		t.Fatalf("stored %d + suppressed %d != taken %d", stored, suppressed, n)
	}
	// The run must exercise both paths: at least one store forced by
	// max_silence at least every 2 minutes (n/120 = 180), and most
	// readings suppressed; a broken filter that stores all or none fails.
	if stored < n/120 || suppressed < n/2 {
		t.Fatalf("stored %d, suppressed %d of %d readings: the filter did not filter", stored, suppressed, n)
	}
	t.Logf("%d readings taken, %d stored, %d suppressed", n, stored, suppressed)
}

// A constant signal is stored exactly once per max_silence.
func TestMaxSilenceOnConstantSignal(t *testing.T) {
	const maxSilence = 30 * time.Second
	steps := run(Options{Bands: map[string]float64{"voltage_v": 0.01}, MaxSilence: maxSilence}, newClock(),
		301, time.Second, func(int) map[string]float64 { return vals("voltage_v", 3.3) })
	var at []int
	for i, s := range steps {
		if s.stored {
			at = append(at, i)
		}
	}
	want := []int{0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300}
	if len(at) != len(want) {
		t.Fatalf("stored at %v, want %v", at, want)
	}
	for i := range want {
		if at[i] != want[i] {
			t.Fatalf("stored at %v, want %v", at, want)
		}
	}
}
