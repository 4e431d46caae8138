package buffer_test

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
)

func TestMaxBytesDropsOldest(t *testing.T) {
	log, sink := newLogger()
	const maxBytes = 64 << 10
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{MaxBytes: maxBytes, WhenFull: buffer.Drop, Logger: log})
	total := 0
	for i := 0; i < 20; i++ { // 20 commits of 100 readings, ~2000 * ~190 bytes >> 64 KiB
		appendN(t, b, total, 100)
		total += 100
	}
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.LiveBytes > maxBytes || st.LiveBytes < maxBytes*3/4 {
		t.Fatalf("LiveBytes = %d, want just under %d", st.LiveBytes, maxBytes)
	}
	if st.DroppedBytes == 0 || st.DroppedBytes+st.Count != uint64(total) {
		t.Fatalf("DroppedBytes %d + Count %d != appended %d", st.DroppedBytes, st.Count, total)
	}
	if f := st.SeqFloor; st.NewestSeq != f+uint64(total) || st.OldestSeq != f+st.DroppedBytes+1 {
		t.Fatalf("kept seqs %d..%d, want the newest %d..%d", st.OldestSeq, st.NewestSeq, f+st.DroppedBytes+1, f+uint64(total))
	}
	if st.DroppedAge != 0 {
		t.Fatalf("DroppedAge = %d", st.DroppedAge)
	}
	// Logged once per commit that dropped, never silent.
	n := strings.Count(sink.String(), "dropped oldest readings")
	if n == 0 || n > 20 {
		t.Fatalf("drop logged %d times for 20 commits:\n%s", n, sink)
	}
}

func TestMaxAgeDropsExpiredSyncedReadings(t *testing.T) {
	ctx := context.Background()
	log, sink := newLogger()
	clock := newClock(t0.Add(time.Hour))
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{
		MaxAge: time.Hour, Logger: log, Now: clock.Now, AgeInterval: 10 * time.Millisecond,
	})
	// Readings 0..99 are taken at t0+i s; 0..9 come from an unsynced clock.
	appendN(t, b, 0, 100)
	for i := 0; i < 10; i++ {
		r := newReading(1000 + i)
		r.TS = t0.Add(-48 * time.Hour) // an unsynced Pi clock: not trusted, so not aged
		r.TimeSynced = false
		if err := b.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Now t0+1h30s: readings 0..29 are older than an hour.
	clock.Advance(30 * time.Second)
	want := uint64(30)
	deadline := time.Now().Add(5 * time.Second)
	var st buffer.Stats
	for time.Now().Before(deadline) { // enforced by the writer's timer, no Append needed
		st, _ = b.Stats()
		if st.DroppedAge >= want {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.DroppedAge != want || st.Count != 110-want || st.OldestSeq != st.SeqFloor+want+1 {
		t.Fatalf("after aging: %+v, want %d dropped by age", st, want)
	}
	if st.DroppedBytes != 0 {
		t.Fatalf("DroppedBytes = %d", st.DroppedBytes)
	}
	for strings.Count(sink.String(), "dropped expired readings") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // logged after the drop is on disk
	}
	if strings.Count(sink.String(), "dropped expired readings") == 0 {
		t.Fatalf("age drop not logged:\n%s", sink)
	}
	// Far in the future every synced reading expires, the unsynced ones stay.
	clock.Advance(1000 * time.Hour)
	fresh := newReading(5000)
	fresh.TS = clock.Now()
	if err := b.Append(ctx, fresh); err != nil { // a commit also enforces the age
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, _ = b.Stats(); st.Count == 11 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	recs, _ := b.Peek(0, 100)
	if f := st.SeqFloor; len(recs) != 11 || recs[0].Seq != f+101 || recs[10].Seq != f+111 {
		t.Fatalf("left %v, want the 10 unsynced readings and the fresh one", seqs(recs))
	}
}

// bbolt never shrinks its file but reuses freed pages: a buffer that fills
// and drains over and over must not grow.
func TestFreeSpaceIsReused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := openT(t, path, buffer.Options{})
	const perRound = 12000 // ~3 MiB a round: more than the log holds, so it goes through bbolt
	rounds := 12
	if runtime.GOARCH == "arm" {
		rounds = 8 // emulated: still twice what the file may hold
	}
	var sizes []int64
	var peakLive int64
	for round := 0; round < rounds; round++ {
		for i := 0; i < perRound/2000; i++ {
			appendN(t, b, round*perRound+i*2000, 2000)
		}
		st, _ := b.Stats()
		peakLive = max(peakLive, st.LiveBytes)
		for {
			recs, err := b.Peek(0, 2000)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			if err := b.Delete(ctx, seqs(recs)...); err != nil {
				t.Fatal(err)
			}
		}
		st, _ = b.Stats()
		sizes = append(sizes, st.FileBytes)
	}
	st, _ := b.Stats()
	if st.Count != 0 || st.LiveBytes != 0 {
		t.Fatalf("drained buffer: %+v", st)
	}
	// Without reuse the file would hold every round's data (~36 MiB); bbolt
	// grows in power-of-two steps, so allow 4x one round's peak.
	if last := sizes[len(sizes)-1]; last > 4*peakLive {
		t.Fatalf("file is %d bytes after %d fill/drain rounds of %d live bytes each: free pages are not reused (sizes %v)",
			last, rounds, peakLive, sizes)
	}
	if sizes[len(sizes)-1] != sizes[rounds/2] {
		t.Logf("note: the file still grew in the second half: %v", sizes)
	}
	if st.FileBytes == 0 || st.FreeBytes == 0 {
		t.Fatalf("Stats should show the file size and its free space: %+v", st)
	}
}
