package buffer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// TestFlippedByteIsCaught: a record whose payload changed on disk fails its
// CRC-32C. verify reports it; the agent never hands it to the publisher,
// moves it aside, counts it and logs it; every other reading stays.
func TestFlippedByteIsCaught(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts buffer.Options
	}{
		{"full check at open", buffer.Options{}},
		{"quick check at open, found by Peek", buffer.Options{FullCheckLimit: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "buffer.db")
			const n = 50
			last := makeBuffer(t, path, n)
			bad := last - 20
			testkit.FlipValueDigit(t, path, bad)

			ro, err := buffer.OpenReadOnly(path, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := ro.Verify(ctx)
			ro.Close()
			if err != nil || rep.OK() || rep.Damaged != 1 || !strings.Contains(strings.Join(rep.Problems, "\n"), fmt.Sprintf("seq %d: ", bad)) ||
				!strings.Contains(strings.Join(rep.Problems, "\n"), "checksum mismatch") {
				t.Fatalf("verify of a flipped byte = %+v, %v; want one checksum problem naming seq %d", rep, err, bad)
			}

			log, sink := newLogger()
			tc.opts.Logger = log
			b := openT(t, path, tc.opts)
			recs, err := b.Peek(0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != n-1 || slices.Contains(seqs(recs), bad) {
				t.Fatalf("Peek returned %d records (damaged seq %d among them: %v); want the %d good ones",
					len(recs), bad, slices.Contains(seqs(recs), bad), n-1)
			}
			for _, r := range recs {
				if _, err := reading.Decode(r.Payload); err != nil {
					t.Fatalf("seq %d: %v", r.Seq, err)
				}
			}
			var st buffer.Stats
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if st, err = b.Stats(); err != nil {
					t.Fatal(err)
				}
				if st.Damaged == 1 || time.Now().After(deadline) {
					break
				}
			}
			if st.Damaged != 1 || st.Count != n-1 {
				t.Fatalf("Stats = %+v; want 1 damaged moved aside and %d left", st, n-1)
			}
			if !strings.Contains(sink.String(), "level=ERROR") || !strings.Contains(sink.String(), fmt.Sprintf("seq=%d", bad)) {
				t.Fatalf("the damaged record was not logged:\n%s", sink)
			}
			rep, err = b.Verify(ctx)
			if err != nil || !rep.OK() || rep.DamagedAside != 1 || rep.Count != n-1 {
				t.Fatalf("Verify after moving aside = %+v, %v", rep, err)
			}
			// Deleting the good ones empties the queue: the damaged one no
			// longer holds it up.
			if err := b.Delete(ctx, seqs(recs)...); err != nil {
				t.Fatal(err)
			}
			if st, _ := b.Stats(); st.Count != 0 {
				t.Fatalf("Count = %d after deleting every good record", st.Count)
			}
		})
	}
}

// TestDamagedRecordsAreCapped: the damaged bucket keeps only the newest
// 1,000 records.
func TestDamagedRecordsAreCapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	const n = 1010
	last := makeBuffer(t, path, n)
	for seq := last - n + 1; seq <= last; seq++ {
		testkit.FlipValueDigit(t, path, seq)
	}
	log, sink := newLogger()
	b := openT(t, path, buffer.Options{Logger: log})
	st, err := b.Stats()
	if err != nil || st.Damaged != n || st.Count != 0 {
		t.Fatalf("Stats = %+v, %v; want %d damaged, none left", st, err, n)
	}
	rep, err := b.Verify(context.Background())
	if err != nil || !rep.OK() || rep.DamagedAside != 1000 {
		t.Fatalf("Verify = %+v, %v; want 1000 kept aside", rep, err)
	}
	if !strings.Contains(sink.String(), "deleted the oldest damaged records") {
		t.Fatalf("trimming not logged:\n%s", sink)
	}
}

// TestFormat1RecordsStillRead: testdata/format1.db was written before
// records had a checksum; its readings are still published and verified.
func TestFormat1RecordsStillRead(t *testing.T) {
	ctx := context.Background()
	orig, err := os.ReadFile("testdata/format1.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "buffer.db")
	writeFile(t, path, orig)

	ro, err := buffer.OpenReadOnly(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ro.Verify(ctx)
	ro.Close()
	if err != nil || !rep.OK() || rep.Count != 5 {
		t.Fatalf("verify of a format 1 file = %+v, %v", rep, err)
	}

	b := openT(t, path, buffer.Options{})
	recs, err := b.Peek(0, 100)
	if err != nil || len(recs) != 5 {
		t.Fatalf("Peek = %d records, %v", len(recs), err)
	}
	for i, rec := range recs {
		r, err := reading.Decode(rec.Payload)
		if err != nil || r.DeviceID != "pi-format1" || r.Values[reading.Temperature] != 21.25+float64(i) || r.TimeSynced != (i != 4) {
			t.Fatalf("record %d = %+v, %v", i, r, err)
		}
	}
	// New records (with a checksum) follow on; both kinds verify.
	rs := appendN(t, b, 0, 3)
	if rs[0].Seq != recs[4].Seq+1 {
		t.Fatalf("new seq %d after %d", rs[0].Seq, recs[4].Seq)
	}
	if n, err := b.Update(ctx, func(r *reading.Reading) bool { return !r.TimeSynced }); err != nil || n != 1 {
		t.Fatalf("Update of the unsynced format 1 record = %d, %v", n, err)
	}
	if rep, err := b.Verify(ctx); err != nil || !rep.OK() || rep.Count != 8 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// TestCorruptFilesAreCapped: a card that keeps damaging the file does not
// fill up with moved-aside copies; the newest three are kept.
func TestCorruptFilesAreCapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	log, sink := newLogger()
	for i := 0; i < 5; i++ {
		writeFile(t, path, randomBytes(8<<10))
		b, err := buffer.Open(path, buffer.Options{Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	aside := corruptFiles(t, path)
	if len(aside) != 3 {
		t.Fatalf("%d moved-aside files kept: %v", len(aside), aside)
	}
	logs, _ := filepath.Glob(path + ".corrupt-*.wal")
	if len(logs) != 3 {
		t.Fatalf("%d moved-aside logs kept: %v", len(logs), logs)
	}
	if n := strings.Count(sink.String(), "deleted an old moved-aside buffer"); n != 2 {
		t.Fatalf("deletions logged %d times, want 2:\n%s", n, sink)
	}
}
