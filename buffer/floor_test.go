package buffer_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
)

// The seqs of a device must never repeat, also when its buffer is lost:
// consumers drop a (device_id, seq) they have seen. Each case lets a first
// buffer hand out seqs, loses it in one of the ways a Pi loses it, and
// starts again with a clock that is right, 3 days behind (fake-hwclock's
// saved time after a power cut) or at 1970 (no saved time, before NTP).
func TestFreshBufferStartsAboveEarlierSeqs(t *testing.T) {
	losses := []struct {
		name string
		lose func(t *testing.T, path string)
		// evidence: something of the old buffer survives in its directory,
		// so even readings stamped before NTP get seqs above the old ones.
		evidence bool
	}{
		{"file and log deleted (re-imaged card, apt purge)", func(t *testing.T, path string) {
			removeT(t, path)
			removeT(t, path+".wal")
		}, false},
		{"file deleted, log left", func(t *testing.T, path string) {
			removeT(t, path)
		}, true},
		{"file truncated to 0 bytes (power cut)", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"file and log truncated to 0 bytes", func(t *testing.T, path string) {
			for _, p := range []string{path, path + ".wal"} {
				if err := os.Truncate(p, 0); err != nil {
					t.Fatal(err)
				}
			}
		}, false},
		{"file overwritten with garbage (moved aside as corrupt)", func(t *testing.T, path string) {
			writeFile(t, path, randomBytes(64<<10))
		}, true},
		{"data page damaged and log deleted (moved aside, sequence salvaged)", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(randomBytes(4096), (fileSizeT(t, path)/4096/2)*4096); err != nil {
				t.Fatal(err)
			}
			removeT(t, path+".wal")
		}, true},
	}
	clocks := []struct {
		name  string
		now   func() time.Time
		right bool
	}{
		{"clock right", time.Now, true},
		{"clock 3 days behind", func() time.Time { return time.Now().Add(-72 * time.Hour) }, false},
		{"clock at 1970", func() time.Time { return time.Unix(30, 0) }, false},
	}
	for _, loss := range losses {
		for _, clk := range clocks {
			t.Run(loss.name+"/"+clk.name, func(t *testing.T) {
				ctx := context.Background()
				path := filepath.Join(t.TempDir(), "buffer.db")
				// The lost buffer ran with a right clock for 3000 readings.
				old := map[uint64]bool{}
				a, err := buffer.Open(path, buffer.Options{})
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range appendN(t, a, 0, 3000) {
					old[r.Seq] = true
				}
				if err := a.Close(); err != nil {
					t.Fatal(err)
				}
				lastOld := lastSeqOf(old)
				loss.lose(t, path)

				b, err := buffer.Open(path, buffer.Options{Now: clk.now})
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = b.Close() }()
				// A reading stamped before NTP, by the wrong clock.
				early := newReading(1)
				early.TS, early.TimeSynced = clk.now(), clk.right
				if err := b.Append(ctx, early); err != nil {
					t.Fatal(err)
				}
				if old[early.Seq] {
					t.Fatalf("seq %d handed out again", early.Seq)
				}
				if (loss.evidence || clk.right) && early.Seq <= lastOld {
					t.Fatalf("first seq %d is not above the lost buffer's last seq %d", early.Seq, lastOld)
				}
				// The clock syncs: from the first synced reading on, seqs
				// are above anything handed out before, whatever was lost.
				synced := newReading(2)
				synced.TS, synced.TimeSynced = time.Now(), true
				if err := b.Append(ctx, synced); err != nil {
					t.Fatal(err)
				}
				if synced.Seq <= lastOld || synced.Seq <= early.Seq {
					t.Fatalf("first synced reading got seq %d; lost buffer reached %d, the reading before got %d",
						synced.Seq, lastOld, early.Seq)
				}
				if synced.Seq > 1<<53 {
					t.Fatalf("seq %d is above 2^53", synced.Seq)
				}
				if rep, err := b.Verify(ctx); err != nil || !rep.OK() {
					t.Fatalf("Verify = %+v, %v", rep, err)
				}
			})
		}
	}
}

// A restart before NTP keeps the floor unconfirmed, so the first synced
// reading after the restart still lifts the seqs above the lost buffer's.
func TestUnconfirmedFloorSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	lastOld := makeBuffer(t, path, 10)
	removeT(t, path)
	removeT(t, path+".wal")
	at1970 := buffer.Options{Now: func() time.Time { return time.Unix(30, 0) }}

	b := openT(t, path, at1970)
	early := newReading(1)
	early.TS, early.TimeSynced = time.Unix(31, 0), false
	if err := b.Append(ctx, early); err != nil {
		t.Fatal(err)
	}
	st, _ := b.Stats()
	if early.Seq != st.SeqFloor+1 {
		t.Fatalf("first seq %d, floor %d", early.Seq, st.SeqFloor)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openT(t, path, at1970)
	synced := newReading(2)
	synced.TS, synced.TimeSynced = time.Now(), true
	if err := b.Append(ctx, synced); err != nil {
		t.Fatal(err)
	}
	if synced.Seq <= lastOld {
		t.Fatalf("synced reading after a restart got seq %d; lost buffer reached %d", synced.Seq, lastOld)
	}
	// The jump happens once: the next synced reading follows on.
	next := newReading(3)
	next.TS, next.TimeSynced = synced.TS.Add(-time.Hour), true // even if the clock steps back
	if err := b.Append(ctx, next); err != nil {
		t.Fatal(err)
	}
	if next.Seq != synced.Seq+1 {
		t.Fatalf("after the jump seq %d follows %d", next.Seq, synced.Seq)
	}
	// The jump is durable: a reopen continues above it.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, path, buffer.Options{})
	if r := appendN(t, b, 0, 1); r[0].Seq != next.Seq+1 {
		t.Fatalf("after reopen seq %d, want %d", r[0].Seq, next.Seq+1)
	}
}

// A buffer opened with a right clock (the usual start) starts at the clock
// in microseconds, and its synced readings do not make the seqs jump.
func TestFloorFollowsTheClock(t *testing.T) {
	before := uint64(time.Now().UnixMicro())
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	after := uint64(time.Now().UnixMicro())
	f := floorOf(t, b)
	if f < before || f > after {
		t.Fatalf("floor %d outside [%d, %d]: not the clock in microseconds", f, before, after)
	}
	time.Sleep(20 * time.Millisecond) // the first reading comes a little later
	for i := range 5 {
		r := newReading(i)
		r.TS, r.TimeSynced = time.Now(), true
		if err := b.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		if r.Seq != f+uint64(i)+1 {
			t.Fatalf("reading %d got seq %d, floor %d: a right clock must not make the seqs jump", i, r.Seq, f)
		}
	}
}

func removeT(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func lastSeqOf(m map[uint64]bool) uint64 {
	var top uint64
	for s := range m {
		top = max(top, s)
	}
	return top
}
