package sim

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

// fakeClock advances by step on every call.
func fakeClock(start time.Time, step time.Duration) func() time.Time {
	t := start
	return func() time.Time { t = t.Add(step); return t }
}

var start = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

func readN(t *testing.T, s *Sensor, n int) []map[string]float64 {
	t.Helper()
	out := make([]map[string]float64, 0, n)
	for range n {
		v, err := s.Read(context.Background())
		if errors.Is(err, ErrInjected) {
			out = append(out, nil)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestDeterministicForSeed(t *testing.T) {
	a := readN(t, New("a", Opts{Seed: 7, FailRate: 0.2, Now: fakeClock(start, time.Minute)}), 500)
	b := readN(t, New("b", Opts{Seed: 7, FailRate: 0.2, Now: fakeClock(start, time.Minute)}), 500)
	c := readN(t, New("a", Opts{Seed: 8, FailRate: 0.2, Now: fakeClock(start, time.Minute)}), 500)
	same, diff := 0, 0
	for i := range a {
		if (a[i] == nil) != (b[i] == nil) {
			t.Fatalf("read %d: failure pattern differs for the same seed", i)
		}
		for k, v := range a[i] {
			if b[i][k] != v {
				t.Fatalf("read %d %s: %v != %v for the same seed", i, k, v, b[i][k])
			}
			if c[i] != nil && c[i][k] == v {
				same++
			} else {
				diff++
			}
		}
	}
	if diff < same {
		t.Fatalf("seeds 7 and 8 gave mostly equal values (%d same, %d different)", same, diff)
	}
}

func TestZeroSeedDependsOnName(t *testing.T) {
	a := readN(t, New("sim-1", Opts{Now: fakeClock(start, time.Second)}), 1)[0]
	b := readN(t, New("sim-1", Opts{Now: fakeClock(start, time.Second)}), 1)[0]
	c := readN(t, New("sim-2", Opts{Now: fakeClock(start, time.Second)}), 1)[0]
	if a["temperature_c"] != b["temperature_c"] {
		t.Fatal("same name, seed 0: not reproducible")
	}
	if a["temperature_c"] == c["temperature_c"] && a["humidity_pct"] == c["humidity_pct"] {
		t.Fatal("different names, seed 0: identical values")
	}
}

func TestPlausibleAndSmooth(t *testing.T) {
	// Two simulated days at one reading a minute.
	vs := readN(t, New("s", Opts{Seed: 1, Now: fakeClock(start, time.Minute)}), 2*24*60)
	ranges := map[string][2]float64{
		"temperature_c": {5, 30},
		"humidity_pct":  {0, 100},
		"pressure_hpa":  {995, 1030},
	}
	maxStep := map[string]float64{"temperature_c": 0.5, "humidity_pct": 2, "pressure_hpa": 0.5}
	lo := map[string]float64{}
	hi := map[string]float64{}
	for i, v := range vs {
		if len(v) != 3 {
			t.Fatalf("read %d: %v, want 3 values", i, v)
		}
		for k, x := range v {
			r, ok := ranges[k]
			if !ok || math.IsNaN(x) || x < r[0] || x > r[1] {
				t.Fatalf("read %d: %s=%v outside %v", i, k, x, r)
			}
			if i > 0 {
				if d := math.Abs(x - vs[i-1][k]); d > maxStep[k] {
					t.Fatalf("read %d: %s jumped by %v in one minute", i, k, d)
				}
			}
			if i == 0 || x < lo[k] {
				lo[k] = x
			}
			if i == 0 || x > hi[k] {
				hi[k] = x
			}
		}
	}
	// A daily curve, not a constant.
	if hi["temperature_c"]-lo["temperature_c"] < 8 {
		t.Fatalf("temperature spans only %v..%v over two days", lo["temperature_c"], hi["temperature_c"])
	}
}

func TestFailRate(t *testing.T) {
	for _, rate := range []float64{0, 0.25, 1} {
		s := New("s", Opts{Seed: 3, FailRate: rate, Now: fakeClock(start, time.Second)})
		fails := 0
		const n = 4000
		for _, v := range readN(t, s, n) {
			if v == nil {
				fails++
			}
		}
		got := float64(fails) / n
		if math.Abs(got-rate) > 0.03 {
			t.Errorf("fail_rate %v: %v of reads failed", rate, got)
		}
	}
}

func TestReadHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := New("s", Opts{}).Read(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
