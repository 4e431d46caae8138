package buffer_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// TestOpensOnANearlyFullDisk: issue 11 item 5. The log used to be
// preallocated to 4 MiB or Open failed, so under 4 MiB free the agent could
// not start at all. Now it starts with what there is.
func TestOpensOnANearlyFullDisk(t *testing.T) {
	for _, tc := range []struct {
		name string
		free int64
	}{
		{"3 MiB free", 3 << 20},
		{"1 MiB free", 1 << 20},
		{"160 KiB free", 160 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testkit.Tmpfs(t, 8<<20)
			testkit.Fill(t, dir, tc.free)
			path := filepath.Join(dir, "buffer.db")
			log, sink := newLogger()
			b, err := buffer.Open(path, buffer.Options{Logger: log})
			if err != nil {
				t.Fatalf("Open with %d bytes free: %v", tc.free, err)
			}
			defer b.Close()
			if fi, err := os.Stat(path + ".wal"); err != nil || fi.Size() >= 4<<20 {
				t.Fatalf("log: %v, %v; want it smaller than the 4 MiB preallocation", fi, err)
			}
			if !strings.Contains(sink.String(), "disk nearly full") {
				t.Fatalf("the short preallocation was not logged:\n%s", sink)
			}
			rs := appendN(t, b, 0, 200)
			recs, err := b.Peek(0, 1000)
			if err != nil || len(recs) != 200 || recs[199].Seq != rs[199].Seq {
				t.Fatalf("Peek = %d records, %v", len(recs), err)
			}
		})
	}
}

// TestFullDiskIsErrNoSpace: issue 11 item 6 (buffer side). When the disk
// fills up, Append fails with an error the agent can tell from a sensor
// error (ErrNoSpace, wrapping ENOSPC), logs it once rather than per
// commit, loses nothing it acknowledged, and works again once space returns.
func TestFullDiskIsErrNoSpace(t *testing.T) {
	ctx := context.Background()
	dir := testkit.Tmpfs(t, 6<<20)
	path := filepath.Join(dir, "buffer.db")
	log, sink := newLogger()
	b, err := buffer.Open(path, buffer.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	acked := map[uint64]bool{}
	for _, r := range appendN(t, b, 0, 100) {
		acked[r.Seq] = true
	}
	filler := testkit.Fill(t, dir, 0)

	var full error
	for i := 0; i < 100000 && full == nil; i += 50 {
		rs := make([]*reading.Reading, 50)
		for j := range rs {
			rs[j] = newReading(i + j)
		}
		if full = b.Append(ctx, rs...); full == nil {
			for _, r := range rs {
				acked[r.Seq] = true
			}
		}
	}
	if !errors.Is(full, buffer.ErrNoSpace) || !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("Append on a full disk = %v; want ErrNoSpace wrapping ENOSPC", full)
	}
	for i := 0; i < 50; i++ { // the agent keeps trying every second per sensor
		if err := b.Append(ctx, newReading(i)); !errors.Is(err, buffer.ErrNoSpace) {
			t.Fatalf("Append %d on a full disk = %v", i, err)
		}
	}
	if n := strings.Count(sink.String(), "buffer commit failed"); n != 1 {
		t.Fatalf("%d commit failures logged; want one line for the whole outage:\n%s", n, sink)
	}
	if _, err := b.Stats(); err != nil {
		t.Fatalf("Stats on a full disk: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	r := newReading(1)
	if err := b.Append(ctx, r); err != nil {
		t.Fatalf("Append after space returned: %v", err)
	}
	acked[r.Seq] = true
	if !strings.Contains(sink.String(), "buffer commits work again") {
		t.Fatalf("recovery not logged:\n%s", sink)
	}
	checkAcked := func(b *buffer.Buffer) {
		t.Helper()
		got := map[uint64]bool{}
		if err := b.Each(ctx, 0, math.MaxUint64, func(seq uint64, _ []byte) error { got[seq] = true; return nil }); err != nil {
			t.Fatal(err)
		}
		for s := range acked {
			if !got[s] {
				t.Fatalf("acknowledged seq %d lost (%d acknowledged, %d stored)", s, len(acked), len(got))
			}
		}
		if rep, err := b.Verify(ctx); err != nil || !rep.OK() {
			t.Fatalf("Verify = %+v, %v", rep, err)
		}
	}
	checkAcked(b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := openT(t, path, buffer.Options{})
	checkAcked(b2)
	t.Logf("%d readings acknowledged before and after the disk was full", len(acked))
}

// TestLogGrowsWhenSpaceReturns: a log that started short gets its full
// preallocation (one data write per append again) once there is room.
func TestLogGrowsWhenSpaceReturns(t *testing.T) {
	dir := testkit.Tmpfs(t, 16<<20)
	filler := testkit.Fill(t, dir, 1<<20)
	path := filepath.Join(dir, "buffer.db")
	b := openT(t, path, buffer.Options{})
	if fi, _ := os.Stat(path + ".wal"); fi.Size() >= 4<<20 {
		t.Fatalf("log of %d bytes on a nearly full disk", fi.Size())
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the log to grow to 4 MiB", 10*time.Second, func() bool {
		fi, err := os.Stat(path + ".wal")
		return err == nil && fi.Size() == 4<<20
	})
	appendN(t, b, 0, 10)
}

// TestStartsOnAFullDiskWithALog: the agent restarts (a crash, the
// watchdog) while the disk is full and its log holds readings bbolt has no
// room for: it still starts, with every reading.
func TestStartsOnAFullDiskWithALog(t *testing.T) {
	dir := testkit.Tmpfs(t, 8<<20)
	path := filepath.Join(dir, "buffer.db")
	b := openT(t, path, buffer.Options{})
	rs := appendN(t, b, 0, 5000)
	snap := filepath.Join(dir, "copy.db")
	for _, suffix := range []string{"", ".wal"} { // a crash: the log is not yet checkpointed
		data, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snap+suffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := b.Stats(); st.LogBytes == 0 {
		t.Fatal("the readings were checkpointed already; the test needs them in the log")
	}
	testkit.Fill(t, dir, 0)

	log, sink := newLogger()
	b2, err := buffer.Open(snap, buffer.Options{Logger: log})
	if err != nil {
		t.Fatalf("Open on a full disk: %v", err)
	}
	defer b2.Close()
	st, err := b2.Stats()
	if err != nil || st.Count != 5000 || st.NewestSeq != rs[4999].Seq {
		t.Fatalf("Stats = %+v, %v; want the 5000 logged readings", st, err)
	}
	if !strings.Contains(sink.String(), "starts without its checkpoint") {
		t.Fatalf("bbolt found room for the checkpoint; the test did not fill the disk:\n%s", sink)
	}
}
