package buffer_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

var t0 = time.Date(2026, 11, 25, 10, 15, 2, 125e6, time.UTC)

func newReading(i int) *reading.Reading {
	return &reading.Reading{
		DeviceID:   "pi-test-1",
		Sensor:     fmt.Sprintf("sim-%d", i%3),
		Kind:       "sim",
		TS:         t0.Add(time.Duration(i) * time.Second),
		TimeSynced: true,
		Values:     map[string]float64{reading.Temperature: 20 + float64(i%100)/10, reading.Humidity: 48.2},
	}
}

func openT(t *testing.T, path string, opts buffer.Options) *buffer.Buffer {
	t.Helper()
	b, err := buffer.Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func appendN(t *testing.T, b *buffer.Buffer, from, n int) []*reading.Reading {
	t.Helper()
	rs := make([]*reading.Reading, n)
	for i := range rs {
		rs[i] = newReading(from + i)
	}
	if err := b.Append(context.Background(), rs...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	return rs
}

func TestAppendPeekDelete(t *testing.T) {
	ctx := context.Background()
	b := openT(t, filepath.Join(t.TempDir(), "sub", "buffer.db"), buffer.Options{})
	f := floorOf(t, b)
	rs := appendN(t, b, 0, 10)
	for i, r := range rs {
		if r.Seq != f+uint64(i+1) {
			t.Fatalf("reading %d got seq %d, want %d", i, r.Seq, f+uint64(i+1))
		}
	}
	recs, err := b.Peek(0, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 || recs[0].Seq != f+1 || recs[3].Seq != f+4 {
		t.Fatalf("Peek(0,4) = %+v", recs)
	}
	for i, rec := range recs {
		got, err := reading.Decode(rec.Payload)
		if err != nil {
			t.Fatalf("payload %d does not decode: %v", i, err)
		}
		if got.Seq != rec.Seq || got.Sensor != rec.Sensor || rec.Sensor != rs[i].Sensor || !got.TS.Equal(rs[i].TS) {
			t.Fatalf("record %d = %+v, decoded %+v", i, rec, got)
		}
	}
	if recs, _ = b.Peek(f+8, 100); len(recs) != 2 || recs[0].Seq != f+9 {
		t.Fatalf("Peek(8,100) = %v", recs)
	}
	// Out-of-order and unknown seqs.
	if err := b.Delete(ctx, f+3, f+1, f+99, f+3, 1); err != nil {
		t.Fatal(err)
	}
	recs, _ = b.Peek(0, 3)
	if len(recs) != 3 || recs[0].Seq != f+2 || recs[1].Seq != f+4 || recs[2].Seq != f+5 {
		t.Fatalf("after delete Peek = %v", seqs(recs))
	}
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Count != 8 || st.OldestSeq != f+2 || st.NewestSeq != f+10 || st.LastSeq != f+10 ||
		!st.OldestTS.Equal(rs[1].TS) || !st.NewestTS.Equal(rs[9].TS) || st.LiveBytes <= 0 || st.FileBytes < st.LiveBytes {
		t.Fatalf("Stats = %+v", st)
	}
}

// floorOf is the seq a fresh buffer started above: its first reading
// gets floorOf+1.
func floorOf(t *testing.T, b *buffer.Buffer) uint64 {
	t.Helper()
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.SeqFloor == 0 {
		t.Fatalf("a fresh buffer has no seq floor: %+v", st)
	}
	return st.SeqFloor
}

func seqs(recs []buffer.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func TestSeqSurvivesReopenAndPurge(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	b, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := floorOf(t, b)
	appendN(t, b, 0, 5)
	if n, err := b.Purge(ctx, f+3); err != nil || n != 3 {
		t.Fatalf("Purge(3) = %d, %v", n, err)
	}
	if n, err := b.Purge(ctx, math.MaxUint64); err != nil || n != 2 {
		t.Fatalf("Purge(all) = %d, %v", n, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, path, buffer.Options{})
	rs := appendN(t, b, 0, 1)
	if rs[0].Seq != f+6 {
		t.Fatalf("after purge and reopen seq = %d, want %d", rs[0].Seq, f+6)
	}
	st, _ := b.Stats()
	if st.Count != 1 || st.LastSeq != f+6 || st.OldestSeq != f+6 || st.SeqFloor != f {
		t.Fatalf("Stats = %+v", st)
	}
	rep, err := b.Verify(ctx)
	if err != nil || !rep.OK() || rep.Count != 1 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestConcurrentAppendsGetUniqueSeqs(t *testing.T) {
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	f := floorOf(t, b)
	const workers, per = 16, 50
	var wg sync.WaitGroup
	got := make(chan uint64, workers*per)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				r := newReading(i)
				if err := b.Append(context.Background(), r); err != nil {
					t.Error(err)
					return
				}
				got <- r.Seq
			}
		}()
	}
	wg.Wait()
	close(got)
	seen := map[uint64]bool{}
	for s := range got {
		if seen[s] || s <= f || s > f+workers*per {
			t.Fatalf("seq %d duplicated or out of range", s)
		}
		seen[s] = true
	}
	if len(seen) != workers*per {
		t.Fatalf("%d seqs, want %d", len(seen), workers*per)
	}
	st, _ := b.Stats()
	if st.Count != workers*per {
		t.Fatalf("Count = %d", st.Count)
	}
}

func TestWait(t *testing.T) {
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Wait(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on empty = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Wait(context.Background(), 0) }()
	time.Sleep(20 * time.Millisecond)
	appendN(t, b, 0, 1)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Append")
	}
	if err := b.Wait(context.Background(), 0); err != nil { // already there
		t.Fatal(err)
	}
	go func() { done <- b.Wait(context.Background(), floorOf(t, b)+1) }()
	time.Sleep(20 * time.Millisecond)
	_ = b.Close()
	if err := <-done; !errors.Is(err, buffer.ErrClosed) {
		t.Fatalf("Wait after Close = %v", err)
	}
	if err := b.Append(context.Background(), newReading(1)); !errors.Is(err, buffer.ErrClosed) {
		t.Fatalf("Append after Close = %v", err)
	}
}

func TestAppendRejectsInvalid(t *testing.T) {
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	tests := []struct {
		name string
		mod  func(r *reading.Reading)
	}{
		{"no device", func(r *reading.Reading) { r.DeviceID = "" }},
		{"bad sensor", func(r *reading.Reading) { r.Sensor = "a/b" }},
		{"no values", func(r *reading.Reading) { r.Values = nil }},
		{"nan", func(r *reading.Reading) { r.Values["x"] = math.NaN() }},
		{"no ts", func(r *reading.Reading) { r.TS = time.Time{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, bad := newReading(1), newReading(2)
			tt.mod(bad)
			err := b.Append(context.Background(), good, bad)
			if !errors.Is(err, buffer.ErrInvalidReading) {
				t.Fatalf("Append = %v, want ErrInvalidReading", err)
			}
			if good.Seq != 0 {
				t.Fatalf("good reading of a rejected call got seq %d", good.Seq)
			}
		})
	}
	if st, _ := b.Stats(); st.Count != 0 {
		t.Fatalf("Count = %d after rejected appends", st.Count)
	}
}

func TestUpdateRewritesTimestamps(t *testing.T) {
	ctx := context.Background()
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	rs := make([]*reading.Reading, 12000) // more than one Update chunk
	for i := range rs {
		rs[i] = newReading(i)
		rs[i].TimeSynced = i%2 == 0
	}
	if err := b.Append(ctx, rs...); err != nil {
		t.Fatal(err)
	}
	shift := 10 * time.Hour
	n, err := b.Update(ctx, func(r *reading.Reading) bool {
		if r.TimeSynced {
			return false
		}
		r.TS, r.TimeSynced, r.Seq = r.TS.Add(shift), true, 12345 // Seq must be ignored
		return true
	})
	if err != nil || n != 6000 {
		t.Fatalf("Update = %d, %v", n, err)
	}
	recs, _ := b.Peek(0, 2)
	r1, _ := reading.Decode(recs[1].Payload)
	if r1.Seq != rs[1].Seq || !r1.TimeSynced || !r1.TS.Equal(rs[1].TS.Add(shift)) {
		t.Fatalf("rewritten reading = %+v", r1)
	}
	rep, err := b.Verify(ctx)
	if err != nil || !rep.OK() || rep.Count != 12000 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	if _, err := buffer.OpenReadOnly(path, 100*time.Millisecond); err == nil {
		t.Fatal("OpenReadOnly of a missing file succeeded")
	}
	b := openT(t, path, buffer.Options{})
	appendN(t, b, 0, 3)
	start := time.Now()
	if _, err := buffer.OpenReadOnly(path, 200*time.Millisecond); !errors.Is(err, buffer.ErrLocked) {
		t.Fatalf("OpenReadOnly while held = %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("OpenReadOnly waited %v", d)
	}
	_ = b.Close()
	ro, err := buffer.OpenReadOnly(path, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if st, err := ro.Stats(); err != nil || st.Count != 3 {
		t.Fatalf("read-only Stats = %+v, %v", st, err)
	}
	if err := ro.Append(context.Background(), newReading(1)); !errors.Is(err, buffer.ErrReadOnly) {
		t.Fatalf("Append on read-only = %v", err)
	}
}

func TestAppendRejectsOversized(t *testing.T) {
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	r := newReading(1)
	for i := 0; len(r.Values) < 3000; i++ {
		r.Values[fmt.Sprintf("value_number_%d", i)] = float64(i) // ~3000 * 25 bytes > 64 KiB
	}
	if err := b.Append(context.Background(), r); !errors.Is(err, buffer.ErrInvalidReading) {
		t.Fatalf("Append of a %d-value reading = %v, want ErrInvalidReading", len(r.Values), err)
	}
	r = newReading(2)
	for i := 0; len(r.Values) < 1000; i++ { // ~25 KiB: fits though the quick bound says maybe not
		r.Values[fmt.Sprintf("value_number_%d", i)] = float64(i)
	}
	if err := b.Append(context.Background(), r); err != nil {
		t.Fatalf("Append of a 1000-value reading: %v", err)
	}
	recs, _ := b.Peek(0, 1)
	if got, err := reading.Decode(recs[0].Payload); err != nil || len(got.Values) != 1000 {
		t.Fatalf("stored big reading: %v", err)
	}
}
