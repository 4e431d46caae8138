package buffer_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// TestHoldKeepsUnsyncedReadingsBack: Options.Hold keeps a reading taken
// before the clock synced away from Peek and Wait, and everything after it
// too (order), until it is corrected or its hold ends. Each still sees it.
func TestHoldKeepsUnsyncedReadingsBack(t *testing.T) {
	ctx := context.Background()
	thisBoot := reading.BootStamp{ID: [16]byte{1, 2, 3}, Since: 5 * time.Second}
	var holdLeft atomic.Int64 // what Hold answers for this boot's readings
	holdLeft.Store(int64(time.Hour))
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{
		Hold: func(synced bool, boot reading.BootStamp) time.Duration {
			if synced || boot.ID != thisBoot.ID {
				return 0
			}
			return time.Duration(holdLeft.Load())
		},
	})
	before := appendN(t, b, 0, 2)
	held := newReading(2)
	held.TimeSynced, held.Boot = false, thisBoot
	earlierBoot := newReading(3) // from a boot nothing can correct: not held
	earlierBoot.TimeSynced, earlierBoot.Boot = false, reading.BootStamp{ID: [16]byte{9}, Since: time.Minute}
	if err := b.Append(ctx, held, earlierBoot); err != nil {
		t.Fatal(err)
	}
	after := appendN(t, b, 4, 2)

	recs, err := b.Peek(0, 100)
	if err != nil || len(recs) != 2 || recs[1].Seq != before[1].Seq {
		t.Fatalf("Peek = %v, %v; want the 2 readings before the held one", seqs(recs), err)
	}
	if err := waitFor(b, before[1].Seq, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past a held reading = %v, want it to block", err)
	}
	var all []uint64
	if err := b.Each(ctx, 0, ^uint64(0), func(seq uint64, _ []byte) error { all = append(all, seq); return nil }); err != nil || len(all) != 6 {
		t.Fatalf("Each = %v, %v; want all 6", all, err)
	}

	// The clock syncs and the agent corrects the reading: Wait wakes up.
	done := make(chan error, 1)
	go func() { done <- waitFor(b, before[1].Seq, 5*time.Second) }()
	time.Sleep(20 * time.Millisecond)
	n, err := b.UpdateUnsynced(ctx, func(r *reading.Reading) bool {
		if r.Boot != thisBoot {
			return false
		}
		r.TS, r.TimeSynced, r.Boot = r.TS.Add(72*time.Hour), true, reading.BootStamp{}
		return true
	})
	if err != nil || n != 1 {
		t.Fatalf("UpdateUnsynced = %d, %v; want the one reading of this boot", n, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait after the correction: %v", err)
	}
	recs, _ = b.Peek(before[1].Seq, 100)
	if len(recs) != 4 || recs[0].Seq != held.Seq || recs[1].Seq != earlierBoot.Seq || recs[3].Seq != after[1].Seq {
		t.Fatalf("Peek after the correction = %v", seqs(recs))
	}
	got, err := reading.Decode(recs[0].Payload)
	if err != nil || !got.TimeSynced || !got.TS.Equal(held.TS.Add(72*time.Hour)) {
		t.Fatalf("corrected reading = %+v, %v", got, err)
	}
	if r, _ := reading.Decode(recs[1].Payload); r.TimeSynced {
		t.Fatal("the earlier boot's reading was marked synced")
	}
}

// TestHoldEnds: a reading whose hold runs out is published as it is, and
// Wait notices without any append.
func TestHoldEnds(t *testing.T) {
	ctx := context.Background()
	deadline := time.Now().Add(300 * time.Millisecond)
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{
		Hold: func(synced bool, boot reading.BootStamp) time.Duration {
			if synced || boot.IsZero() {
				return 0
			}
			return time.Until(deadline)
		},
	})
	r := newReading(1)
	r.TimeSynced, r.Boot = false, reading.BootStamp{ID: [16]byte{7}, Since: time.Second}
	if err := b.Append(ctx, r); err != nil {
		t.Fatal(err)
	}
	if recs, _ := b.Peek(0, 10); len(recs) != 0 {
		t.Fatalf("held reading returned: %v", seqs(recs))
	}
	if err := waitFor(b, 0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if early := time.Until(deadline); early > 5*time.Millisecond {
		t.Fatalf("Wait returned %v before the hold ended", early)
	}
	recs, _ := b.Peek(0, 10)
	if len(recs) != 1 {
		t.Fatalf("Peek after the hold = %v", seqs(recs))
	}
	if got, _ := reading.Parse(recs[0].Payload); got.TimeSynced || !got.TS.Equal(r.TS.Truncate(time.Millisecond)) {
		t.Fatalf("reading after its hold = %+v; want it as it was, flagged", got)
	}
}

func waitFor(b *buffer.Buffer, after uint64, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return b.Wait(ctx, after)
}

// TestBootStampIsKept: the stamp of an unsynced reading survives the log,
// the checkpoint and a reopen, and goes once the reading is synced.
func TestBootStampIsKept(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	stamp := reading.BootStamp{ID: [16]byte{0xaa, 1}, Since: 90*time.Second + 5*time.Millisecond}
	b, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := newReading(1)
	r.TimeSynced, r.Boot = false, stamp
	synced := newReading(2)
	synced.Boot = stamp // a synced reading needs no stamp: not kept
	if err := b.Append(ctx, r, synced); err != nil {
		t.Fatal(err)
	}
	seen := func(b *buffer.Buffer) []reading.BootStamp {
		t.Helper()
		var out []reading.BootStamp
		if _, err := b.Update(ctx, func(r *reading.Reading) bool { out = append(out, r.Boot); return false }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := seen(b); len(got) != 2 || got[0] != stamp || !got[1].IsZero() {
		t.Fatalf("stamps = %v", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, path, buffer.Options{})
	if got := seen(b); got[0] != stamp {
		t.Fatalf("after reopen, stamp = %v", got[0])
	}
	if n, err := b.UpdateUnsynced(ctx, func(r *reading.Reading) bool { r.TimeSynced = true; return true }); err != nil || n != 1 {
		t.Fatalf("UpdateUnsynced = %d, %v; want only the unsynced reading", n, err)
	}
	if got := seen(b); !got[0].IsZero() {
		t.Fatalf("a synced reading kept its stamp: %v", got[0])
	}
	if rep, err := b.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// TestStatsCountsHeldReadings: Stats counts the readings the hold keeps
// back (the newest ones, taken unsynced in this boot) and says when the
// oldest of them is let go; a read-only buffer counts them with the hold
// it is given; nothing is held once the hold says so.
func TestStatsCountsHeldReadings(t *testing.T) {
	ctx := context.Background()
	thisBoot := [16]byte{1, 2, 3}
	var left atomic.Int64
	left.Store(int64(4 * time.Minute))
	hold := func(synced bool, boot reading.BootStamp) time.Duration {
		if synced || boot.ID != thisBoot {
			return 0
		}
		// The oldest reading of this boot has the least left.
		return time.Duration(left.Load()) + boot.Since - 10*time.Second
	}
	path := filepath.Join(t.TempDir(), "buffer.db")
	now := time.Unix(1_800_000_000, 0)
	b := openT(t, path, buffer.Options{Hold: hold, Now: func() time.Time { return now }})
	appendN(t, b, 0, 2)
	earlierBoot := newReading(2)
	earlierBoot.TimeSynced, earlierBoot.Boot = false, reading.BootStamp{ID: [16]byte{9}, Since: time.Minute}
	held := []*reading.Reading{newReading(3), newReading(4), newReading(5)}
	for i, r := range held {
		r.TimeSynced, r.Boot = false, reading.BootStamp{ID: thisBoot, Since: time.Duration(10+i) * time.Second}
	}
	if err := b.Append(ctx, append([]*reading.Reading{earlierBoot}, held...)...); err != nil {
		t.Fatal(err)
	}
	st, err := b.Stats()
	if err != nil || st.Held != 3 || !st.HeldUntil.Equal(now.Add(4*time.Minute)) || st.Count != 6 {
		t.Fatalf("Stats = held %d until %v (count %d), %v; want 3 held until %v", st.Held, st.HeldUntil, st.Count, err, now.Add(4*time.Minute))
	}
	left.Store(int64(-time.Hour))
	if st, err := b.Stats(); err != nil || st.Held != 0 || !st.HeldUntil.IsZero() {
		t.Fatalf("Stats after the hold = held %d until %v, %v; want none", st.Held, st.HeldUntil, err)
	}
	left.Store(int64(4 * time.Minute))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := buffer.OpenReadOnly(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if st, err := ro.Stats(); err != nil || st.Held != 0 {
		t.Errorf("read-only Stats without a hold = held %d, %v", st.Held, err)
	}
	if n, rest, err := ro.CountHeld(hold); err != nil || n != 3 || rest != 4*time.Minute {
		t.Errorf("read-only CountHeld = %d, %v, %v; want 3 for 4m", n, rest, err)
	}
}
