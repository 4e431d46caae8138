package buffer_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// slowHost: the race detector, or 32 bits (scripts/test-arm.sh runs the
// package under qemu, at a tenth of the speed): the long simulations run
// smaller, with about the same ratio of data to room.
const slowHost = raceEnabled || strconv.IntSize == 32

// week drives a buffer of maxBytes with sensors sensors at 1 Hz for span
// of simulated time, appending one batch per simulated minute on an
// injected clock (no broker: nothing is deleted), and returns the buffer
// and how many readings were taken per sensor.
func week(t testing.TB, mode buffer.WhenFull, maxBytes int64, sensors int, span time.Duration) (*buffer.Buffer, int) {
	t.Helper()
	return simulate(t, buffer.Options{MaxBytes: maxBytes, WhenFull: mode}, sensors, span)
}

// simulate is week with more options; Now and Logger are set here.
func simulate(t testing.TB, opts buffer.Options, sensors int, span time.Duration) (*buffer.Buffer, int) {
	log, _ := newLogger()
	return simulateLog(t, opts, sensors, span, log)
}

func simulateLog(t testing.TB, opts buffer.Options, sensors int, span time.Duration, log *slog.Logger) (*buffer.Buffer, int) {
	t.Helper()
	clock := newClock(t0)
	opts.Logger = log
	opts.Now = clock.Now
	b, err := buffer.Open(filepath.Join(t.TempDir(), "buffer.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, appendSpan(t, b, clock, sensors, span, true)
}

// appendSpan appends sensors sensors' readings at 1 Hz over span from t0,
// one batch per simulated 10 minutes, moving clock along, and returns the
// readings taken per sensor. With settle each append's downsampling pass
// runs before the next append, as when readings come a few a second;
// without, appends come as fast as the writer takes them (a burst).
func appendSpan(t testing.TB, b *buffer.Buffer, clock *fakeClock, sensors int, span time.Duration, settle bool) int {
	t.Helper()
	ctx := context.Background()
	seconds := int(span / time.Second)
	batch := make([]*reading.Reading, 0, 600*sensors) // one commit per simulated 10 minutes
	for s := 0; s < seconds; s++ {
		ts := t0.Add(time.Duration(s) * time.Second)
		for i := 0; i < sensors; i++ {
			batch = append(batch, &reading.Reading{
				DeviceID: "pi-greenhouse-1", Sensor: fmt.Sprintf("bme280-%d", i), Kind: "bme280",
				TS: ts, TimeSynced: true,
				Values: map[string]float64{
					reading.Temperature: 21 + 3*math.Sin(float64(s)/13751) + float64(i)/10,
					reading.Humidity:    48 + float64(s%600)/100,
					reading.Pressure:    1008.61,
				},
			})
		}
		if len(batch) == cap(batch) || s == seconds-1 {
			clock.ns.Store(ts.UnixNano())
			if err := b.Append(ctx, batch...); err != nil {
				t.Fatal(err)
			}
			if settle {
				b.Settle()
			}
			batch = batch[:0]
		}
	}
	return seconds
}

// drained is what reaches the consumer: every record, decoded, in seq order.
func drained(t testing.TB, b *buffer.Buffer) []reading.Reading {
	t.Helper()
	var out []reading.Reading
	err := b.Each(context.Background(), 0, math.MaxUint64, func(seq uint64, p []byte) error {
		r, err := reading.Decode(p) // the forwarder's check
		if err != nil {
			return fmt.Errorf("seq %d: %w", seq, err)
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDownsampleKeepsTheWeek is issue 23's check: a 16 MiB buffer, 4
// sensors at 1 Hz, no broker for a week. With downsample what is left
// covers the whole week per sensor with no gap longer than the coarsest
// window, the aggregates' counts add up to the readings taken, nothing is
// dropped and every seq handed out is either there or covered by an
// aggregate; with drop the first days are missing.
func TestDownsampleKeepsTheWeek(t *testing.T) {
	span, maxBytes := 7*24*time.Hour, int64(16<<20)
	switch {
	case slowHost:
		span, maxBytes = 6*time.Hour, 600<<10 // about the same ratio of data to room, 28 times less work
	case testing.Short():
		span, maxBytes = 24*time.Hour, 2<<20
	}
	const sensors = 4
	coarsest := buffer.FoldWindow << (buffer.FoldLevels - 1)
	for _, mode := range []buffer.WhenFull{buffer.Downsample, buffer.Drop} {
		t.Run(mode.String(), func(t *testing.T) {
			b, seconds := week(t, mode, maxBytes, sensors, span)
			st, err := b.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.LiveBytes > maxBytes {
				t.Fatalf("live bytes %d over max_bytes %d", st.LiveBytes, maxBytes)
			}
			recs := drained(t, b)
			end := t0.Add(time.Duration(seconds-1) * time.Second)
			taken := uint64(seconds * sensors)
			var n, aggs uint64
			levels := map[int]int{}
			bySensor := map[string][]reading.Reading{}
			for _, r := range recs {
				bySensor[r.Sensor] = append(bySensor[r.Sensor], r)
				if r.Agg == nil {
					n++
					levels[0]++
					continue
				}
				n += r.Agg.N
				aggs++
				levels[r.Agg.Level]++
			}
			t.Logf("%s: %d records (%d aggregates, levels %v), %.1f MiB live, folded %d, dropped %d",
				mode, len(recs), aggs, levels, float64(st.LiveBytes)/(1<<20), st.Folded, st.DroppedBytes)
			if mode == buffer.Drop {
				if st.DroppedBytes+st.Count != taken || aggs != 0 {
					t.Fatalf("dropped %d + kept %d != taken %d (aggregates %d)", st.DroppedBytes, st.Count, taken, aggs)
				}
				if first := recs[0].TS; first.Sub(t0) < span*3/4 {
					t.Fatalf("drop mode kept readings from %v, %v after the start; want the first days missing", first, first.Sub(t0))
				}
				return
			}
			if st.DroppedBytes != 0 || n != taken || st.Folded == 0 || st.Folded > taken {
				t.Fatalf("readings taken %d, accounted for %d, folded %d, dropped %d", taken, n, st.Folded, st.DroppedBytes)
			}
			if len(levels) < 3 {
				t.Fatalf("levels %v: the oldest part was never folded again", levels)
			}
			if len(bySensor) != sensors {
				t.Fatalf("records of %d sensors, want %d", len(bySensor), sensors)
			}
			for name, rs := range bySensor {
				sort.Slice(rs, func(i, j int) bool { return rs[i].TS.Before(rs[j].TS) })
				if !rs[0].TS.Equal(t0) {
					t.Fatalf("%s: first record at %v, want the week's start %v", name, rs[0].TS, t0)
				}
				last := rs[len(rs)-1]
				if !last.TS.Equal(end) || last.Agg != nil {
					t.Fatalf("%s: last record %v (agg %v), want the newest reading at %v", name, last.TS, last.Agg != nil, end)
				}
				var sum uint64
				for i, r := range rs {
					to := r.TS
					if r.Agg != nil {
						to = r.Agg.To
						sum += r.Agg.N
					} else {
						sum++
					}
					if i+1 < len(rs) {
						if gap := rs[i+1].TS.Sub(to); gap > coarsest || gap <= 0 {
							t.Fatalf("%s: gap of %v after %v (coarsest window %v)", name, gap, to, coarsest)
						}
					}
				}
				if sum != uint64(seconds) {
					t.Fatalf("%s: counts add up to %d, want %d readings taken", name, sum, seconds)
				}
			}
			// Every seq handed out is there or accounted for by an aggregate.
			present := map[uint64]bool{}
			var covers [][2]uint64
			for _, r := range recs {
				present[r.Seq] = true
				if r.Agg != nil {
					covers = append(covers, r.Agg.Covers)
				}
			}
			sort.Slice(covers, func(i, j int) bool { return covers[i][0] < covers[j][0] })
			for seq, ci := st.SeqFloor+1, 0; seq <= st.LastSeq; seq++ {
				for ci < len(covers) && covers[ci][1] < seq {
					ci++
				}
				inside := false
				for j := ci; j < len(covers) && covers[j][0] <= seq; j++ {
					if covers[j][1] >= seq {
						inside = true
						break
					}
				}
				if !present[seq] && !inside {
					t.Fatalf("seq %d is neither in the buffer nor covered by an aggregate", seq)
				}
			}
		})
	}
}

// TestDownsampleSurvivesReopen: the folded count and the aggregates are in
// the file, and seqs go on above the aggregates' after a restart.
func TestDownsampleSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	log, sink := newLogger()
	b := openT(t, path, buffer.Options{MaxBytes: 1 << 20, Logger: log})
	for i := 0; i < 60; i++ {
		appendN(t, b, i*200, 200)
	}
	b.Settle()
	before, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if before.Folded == 0 || !strings.Contains(sink.String(), "folded oldest readings into aggregates") {
		t.Fatalf("no fold logged: stats %+v\n%s", before, sink)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, path, buffer.Options{MaxBytes: 1 << 20, Logger: log})
	after, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if after.Folded != before.Folded || after.Count != before.Count || after.LastSeq != before.LastSeq {
		t.Fatalf("after reopen %+v, before %+v", after, before)
	}
	rep, err := b.Verify(context.Background())
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	rs := appendN(t, b, 12000, 1)
	if rs[0].Seq != before.LastSeq+1 {
		t.Fatalf("next seq %d, want %d", rs[0].Seq, before.LastSeq+1)
	}
}

// TestDownsampleAgesAggregates: max_age still applies to aggregates, by
// their first time, although their seqs are newer than the readings left
// (the writer's max_age scan, which stops at the first young record in seq
// order, would never reach them): the pass drops them and counts their
// readings in DroppedAge.
func TestDownsampleAgesAggregates(t *testing.T) {
	const sensors = 4
	span, maxAge, maxBytes := 10*time.Hour, 3*time.Hour, int64(1<<20)
	if slowHost {
		span, maxAge, maxBytes = 5*time.Hour, 90*time.Minute, 512<<10
	}
	b, seconds := simulate(t, buffer.Options{MaxBytes: maxBytes, MaxAge: maxAge, AgeInterval: time.Hour}, sensors, span)
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	recs := drained(t, b)
	var kept uint64
	end := t0.Add(time.Duration(seconds-1) * time.Second)
	for _, r := range recs {
		if r.Agg == nil {
			kept++
			continue
		}
		kept += r.Agg.N
		if age := end.Sub(r.TS); age > maxAge+time.Hour { // passes run every so often, not every second
			t.Errorf("aggregate seq %d from %v is %v old, max_age %v", r.Seq, r.TS, age, maxAge)
		}
	}
	taken := uint64(seconds * sensors)
	if st.DroppedAge == 0 || kept+st.DroppedAge+st.DroppedBytes != taken {
		t.Fatalf("taken %d: kept %d + dropped by age %d + by bytes %d", taken, kept, st.DroppedAge, st.DroppedBytes)
	}
}

// TestAppendsDuringPass: a downsampling pass runs in the writer, chunk by
// chunk, so the append that takes the buffer over max_bytes returns at
// once and an append that comes during the pass is stored between two
// chunks instead of waiting for the whole pass (seconds for a full 256 MiB
// buffer, more on a Pi Zero, during which every sensor loop would stand).
func TestAppendsDuringPass(t *testing.T) {
	b, _ := week(t, buffer.Drop, 4<<20, 4, 7*time.Hour) // full of raw readings
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	path := b.Path()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, path, buffer.Options{MaxBytes: 4 << 20, WhenFull: buffer.Downsample})
	inPass := make(chan struct{})
	release := make(chan struct{})
	chunks := 0
	servedAt := 0 // the chunk before which the second append was stored
	var second []*reading.Reading
	b.OnChunk(func() {
		chunks++
		switch {
		case chunks == 1:
			close(inPass)
			<-release // the second append is queued now
		case servedAt == 0 && second[0].Seq != 0:
			servedAt = chunks
		}
	})
	next := func(i int) *reading.Reading {
		return &reading.Reading{DeviceID: "pi-greenhouse-1", Sensor: "bme280-0", Kind: "bme280",
			TS: st.NewestTS.Add(time.Duration(i) * time.Second), TimeSynced: true,
			Values: map[string]float64{reading.Temperature: 21, reading.Humidity: 48, reading.Pressure: 1008.61}}
	}
	if err := b.Append(context.Background(), next(1)); err != nil { // takes it over: returns before the pass
		t.Fatal(err)
	}
	<-inPass
	second = []*reading.Reading{next(2)}
	done := make(chan error, 1)
	go func() { done <- b.Append(context.Background(), second...) }()
	testkit.WaitFor(t, "the second append queued for the writer", 10*time.Second, func() bool { return b.Waiting() > 0 })
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b.Settle() // the pass's end
	if servedAt != 2 || chunks < 4 {
		t.Fatalf("the append was stored before chunk %d of %d; want before the 2nd", servedAt, chunks)
	}
	after, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if after.Folded == 0 || after.LiveBytes > 4<<20 || after.DroppedBytes != st.DroppedBytes {
		t.Fatalf("after the pass: %+v (before: dropped %d)", after, st.DroppedBytes)
	}
	found := 0
	err = b.Each(context.Background(), second[0].Seq, second[0].Seq, func(uint64, []byte) error { found++; return nil })
	if err != nil || found != 1 {
		t.Fatalf("the append stored during the pass: found %d, %v", found, err)
	}
}

// TestAppendsOutrunPass: appends that come faster than a pass folds (a
// burst, here as fast as the writer takes them) are served between its
// chunks and make the buffer grow past the target meanwhile; the pass then
// folds them too instead of dropping, and a clean Close finishes the pass
// a last append asked for. Nothing is dropped and the counts add up.
func TestAppendsOutrunPass(t *testing.T) {
	maxBytes, span := int64(1<<20), 12*time.Hour
	if slowHost {
		maxBytes, span = 256<<10, 3*time.Hour
	}
	const sensors = 4
	path := filepath.Join(t.TempDir(), "buffer.db")
	clock := newClock(t0)
	b := openT(t, path, buffer.Options{MaxBytes: maxBytes, Now: clock.Now})
	seconds := appendSpan(t, b, clock, sensors, span, false)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, path, buffer.Options{MaxBytes: maxBytes})
	st, err := b.Stats()
	if err != nil || st.Folded == 0 || st.DroppedBytes != 0 || st.LiveBytes > maxBytes {
		t.Fatalf("after the burst: %+v, %v; want readings folded, none dropped, within %d bytes", st, err, maxBytes)
	}
	n := map[string]uint64{}
	for _, r := range drained(t, b) {
		if r.Agg != nil {
			n[r.Sensor] += r.Agg.N
		} else {
			n[r.Sensor]++
		}
	}
	for i := 0; i < sensors; i++ {
		if s := fmt.Sprintf("bme280-%d", i); n[s] != uint64(seconds) {
			t.Fatalf("%s: counts add up to %d, want %d readings taken", s, n[s], seconds)
		}
	}
}
