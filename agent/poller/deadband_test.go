package poller_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/agent/poller"
	"github.com/edgepipe/sensorpipe/buffer/metricset"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers"
)

// signalSensor returns a known signal: reading i is signal(i). It records
// every value it hands out, so the test knows what was taken.
type signalSensor struct {
	signal func(i int) float64
	mu     sync.Mutex
	taken  []taken
}

type taken struct {
	at time.Time
	v  float64
}

func (s *signalSensor) Name() string { return "temp" }
func (s *signalSensor) Kind() string { return "sim" }
func (s *signalSensor) Close() error { return nil }
func (s *signalSensor) Read(context.Context) (map[string]float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.signal(len(s.taken))
	s.taken = append(s.taken, taken{time.Now(), v})
	return map[string]float64{"temperature_c": v}, nil
}

// memBuffer stands in for the buffer: it gives each appended reading the
// next seq, as bbolt's NextSequence does.
type memBuffer struct {
	mu sync.Mutex
	rs []reading.Reading
}

func (b *memBuffer) Append(_ context.Context, rs ...*reading.Reading) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range rs {
		r.Seq = uint64(len(b.rs) + 1)
		b.rs = append(b.rs, *r)
	}
	return nil
}

// TestDeadbandStoresOnlyWhatMoved runs a sensor with a deadband of 0.1 °C
// and max_silence 1m for an hour of fake time (testing/synctest): a slow
// sine with a step and a flat stretch. The stored readings have gap-free
// seqs, stored + suppressed = taken, no gap between stored readings
// exceeds max_silence, and every value taken can be rebuilt from the
// stored ones within the deadband.
func TestDeadbandStoresOnlyWhatMoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			band       = 0.1
			maxSilence = time.Minute
			interval   = time.Second
			run        = time.Hour
		)
		sensor := &signalSensor{signal: func(i int) float64 {
			switch {
			case i >= 1800 && i < 2400: // flat: only max_silence stores
				return 25
			case i >= 2400: // a step up, then a slow ramp
				return 30 + float64(i-2400)*0.01
			}
			return math.Round((20+3*math.Sin(2*math.Pi*float64(i)/1800))*100) / 100
		}}
		buf := &memBuffer{}
		var board health.Board
		set := metricset.New()
		suppressed := set.CounterVec("suppressed", "", "sensor")
		readings := set.CounterVec("readings", "", "sensor")
		ctx, cancel := context.WithTimeout(context.Background(), run)
		defer cancel()
		err := poller.Run(ctx, poller.Options{
			DeviceID: "pi-1",
			Sensors: []drivers.Spec{{Name: "temp", Driver: "sim", Interval: interval,
				Deadband: drivers.Deadband{"temperature_c": band}, MaxSilence: maxSilence}},
			Open:    open(map[string]drivers.Sensor{"temp": sensor}),
			Buffer:  buf,
			Clock:   syncedClock(),
			Metrics: poller.Metrics{Readings: readings, Suppressed: suppressed},
			Health:  &board,
		})
		if err != nil {
			t.Fatal(err)
		}
		stored, took := buf.rs, sensor.taken
		if len(took) < 3500 {
			t.Fatalf("%d readings taken in an hour at 1s", len(took))
		}
		sup := suppressed.With("temp").Get()
		if uint64(len(stored))+sup != uint64(len(took)) {
			t.Fatalf("stored %d + suppressed %d != taken %d", len(stored), sup, len(took))
		}
		if snap, _ := board.Snapshot(); snap["temp"].Suppressed != sup || snap["temp"].State != health.StateOK {
			t.Fatalf("health board: %+v, want ok with %d suppressed (the heartbeat's count)", snap["temp"], sup)
		}
		if got := readings.With("temp").Get(); got != uint64(len(stored)) {
			t.Fatalf("readings metric %d, stored %d", got, len(stored))
		}
		if sup < uint64(len(took))/2 || len(stored) < int(run/maxSilence) {
			t.Fatalf("stored %d, suppressed %d of %d: the deadband did not filter", len(stored), sup, len(took))
		}
		for i, r := range stored {
			if r.Seq != uint64(i+1) {
				t.Fatalf("stored reading %d has seq %d: a suppressed reading took a seq", i, r.Seq)
			}
			if i > 0 && r.TS.Sub(stored[i-1].TS) > maxSilence {
				t.Fatalf("%v between stored seqs %d and %d, max_silence is %v", r.TS.Sub(stored[i-1].TS), i, i+1, maxSilence)
			}
		}
		// The consumer's rebuild: each value taken is the last stored one
		// at or before it, within the band. Stored readings are matched to
		// takes by time (synctest time stands still during a poll).
		j := -1
		flat := 0
		for i, tk := range took {
			if j+1 < len(stored) && stored[j+1].TS.Equal(tk.at) && stored[j+1].Values["temperature_c"] == tk.v {
				j++
				if i >= 1800 && i < 2400 {
					flat++
				}
				continue
			}
			if j < 0 {
				t.Fatalf("take %d (%v) came before any stored reading: the first is always stored", i, tk.v)
			}
			if got := stored[j].Values["temperature_c"]; math.Abs(tk.v-got) >= band && tk.v != got {
				t.Fatalf("take %d at %v: %v, rebuilt %v from seq %d: off by the deadband or more", i, tk.at, tk.v, got, stored[j].Seq)
			}
		}
		if j != len(stored)-1 {
			t.Fatalf("matched %d of %d stored readings to takes", j+1, len(stored))
		}
		// The flat ten minutes are stored once per max_silence (10 or 11
		// times depending on where its first store falls), not at 1 Hz.
		if flat < 9 || flat > 11 {
			t.Fatalf("%d readings stored in 10 flat minutes with max_silence 1m", flat)
		}
	})
}

// flakyBuffer refuses the appends whose call number (from 1) is listed.
type flakyBuffer struct {
	memBuffer
	calls  int
	refuse map[int]bool
}

func (b *flakyBuffer) Append(ctx context.Context, rs ...*reading.Reading) error {
	b.calls++
	if b.refuse[b.calls] {
		return errors.New("write buffer.db.wal: no space left on device")
	}
	return b.memBuffer.Append(ctx, rs...)
}

// TestDeadbandRefusedAppendIsNotTheReference: a reading the buffer refused
// does not become the one later readings are compared with, so the same
// move is stored at the next poll instead of being suppressed for ever.
func TestDeadbandRefusedAppendIsNotTheReference(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		values := []float64{20, 20.5, 20.5, 20.5}
		sensor := &signalSensor{signal: func(i int) float64 { return values[min(i, len(values)-1)] }}
		buf := &flakyBuffer{refuse: map[int]bool{2: true}} // the first 20.5
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second+time.Millisecond)
		defer cancel()
		err := poller.Run(ctx, poller.Options{
			DeviceID: "pi-1",
			Sensors: []drivers.Spec{{Name: "temp", Driver: "sim", Interval: time.Second,
				Deadband: drivers.Deadband{"temperature_c": 0.1}}},
			Open:   open(map[string]drivers.Sensor{"temp": sensor}),
			Buffer: buf,
			Clock:  syncedClock(),
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []float64
		for _, r := range buf.rs {
			got = append(got, r.Values["temperature_c"])
		}
		if len(sensor.taken) != 4 || buf.calls != 3 || len(got) != 2 || got[0] != 20 || got[1] != 20.5 {
			t.Fatalf("took %d, %d appends, stored %v; want 4 taken, 3 appends (the refused 20.5 again, then suppressed), stored [20 20.5]",
				len(sensor.taken), buf.calls, got)
		}
	})
}
