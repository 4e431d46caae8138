package buffer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
)

// snapshot copies the buffer's files while it is open: what a power cut
// would leave if the page cache had reached the disk, which is all an
// acknowledged (O_DSYNC) log write promises.
func snapshot(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.db")
	for _, suffix := range []string{"", ".wal"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestLogIsReplayed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := openT(t, path, buffer.Options{})
	fl := floorOf(t, b)
	appendN(t, b, 0, 100)
	if err := b.Delete(ctx, fl+1, fl+2, fl+50); err != nil {
		t.Fatal(err)
	}
	st, _ := b.Stats()
	if st.LogBytes == 0 {
		t.Fatalf("expected the changes to be in the log still: %+v", st)
	}
	snap := snapshot(t, path) // within the 1 s idle checkpoint

	ro, err := buffer.OpenReadOnly(snap, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rst, _ := ro.Stats()
	rep, err := ro.Verify(ctx)
	ro.Close()
	if err != nil || !rep.OK() || rst.Count != 97 || rst.OldestSeq != fl+3 || rst.NewestSeq != fl+100 || rst.LiveBytes != st.LiveBytes {
		t.Fatalf("read-only replay: stats %+v verify %+v %v (live want %d)", rst, rep, err, st.LiveBytes)
	}

	b2 := openT(t, snap, buffer.Options{})
	recs, _ := b2.Peek(0, 1000)
	if len(recs) != 97 || recs[0].Seq != fl+3 || recs[47].Seq != fl+51 {
		t.Fatalf("after replay: %v", seqs(recs))
	}
	r := appendN(t, b2, 0, 1)
	if r[0].Seq != fl+101 {
		t.Fatalf("seq after replay = %d, want %d", r[0].Seq, fl+101)
	}
}

func TestTornLogTailIsIgnored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := openT(t, path, buffer.Options{})
	fl := floorOf(t, b)
	for i := 0; i < 10; i++ { // ten commits, one record each
		appendN(t, b, i, 1)
	}
	st, _ := b.Stats()
	snap := snapshot(t, path)
	// Tear the last record: zero its last 20 bytes.
	f, err := os.OpenFile(snap+".wal", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 20), st.LogBytes-20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b2 := openT(t, snap, buffer.Options{})
	st2, _ := b2.Stats()
	if st2.Count != 9 || st2.NewestSeq != fl+9 {
		t.Fatalf("after a torn tail: %+v, want the 9 intact records", st2)
	}
	if rep, err := b2.Verify(context.Background()); err != nil || !rep.OK() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	// The new epoch: a second crash must not resurrect the old tail, even
	// where the new log is shorter than the old one.
	appendN(t, b2, 0, 1)
	snap2 := snapshot(t, snap)
	b3 := openT(t, snap2, buffer.Options{})
	if st3, _ := b3.Stats(); st3.Count != 10 || st3.NewestSeq != fl+10 {
		t.Fatalf("after the second crash: %+v", st3)
	}
}

func TestCleanCloseLeavesNothingInTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fl := floorOf(t, b)
	appendN(t, b, 0, 50)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + ".wal"); err != nil {
		t.Fatal(err)
	}
	b = openT(t, path, buffer.Options{})
	if st, _ := b.Stats(); st.Count != 50 || st.LastSeq != fl+50 || st.SeqFloor != fl {
		t.Fatalf("after a clean close and losing the log: %+v", st)
	}
}

func TestDamagedLogIsLoggedNotSilent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := openT(t, path, buffer.Options{})
	fl := floorOf(t, b)
	for i := 0; i < 10; i++ { // ten commits, one record each
		appendN(t, b, i, 1)
	}
	st, _ := b.Stats()
	snap := snapshot(t, path)
	// Flip a byte inside the third record: records 4..10 are intact but
	// can no longer be replayed in order.
	f, err := os.OpenFile(snap+".wal", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := st.LogBytes / 10
	if _, err := f.WriteAt([]byte{0xff, 0xff}, 2*rec+30); err != nil {
		t.Fatal(err)
	}
	f.Close()

	ro, err := buffer.OpenReadOnly(snap, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rst, _ := ro.Stats()
	ro.Close()
	if rst.Count != 2 || rst.NewestSeq != fl+2 || rst.LastSeq != fl+10 {
		t.Fatalf("read-only view of a damaged log: %+v", rst)
	}
	log, sink := newLogger()
	b2 := openT(t, snap, buffer.Options{Logger: log})
	if !strings.Contains(sink.String(), "buffer log is damaged") || !strings.Contains(sink.String(), "lost_records=7") {
		t.Fatalf("damage not logged:\n%s", sink)
	}
	if st2, _ := b2.Stats(); st2.Count != 2 {
		t.Fatalf("after a damaged log: %+v", st2)
	}
	// Seqs 3..10 were acknowledged before the damage: never reused.
	if r := appendN(t, b2, 0, 1); r[0].Seq != fl+11 {
		t.Fatalf("seq after a damaged log = %d, want %d", r[0].Seq, fl+11)
	}
}
