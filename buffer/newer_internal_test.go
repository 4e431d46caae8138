package buffer

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// TestNewerFormatIsKept: a record of a format this build does not know
// (written by a newer build, met after a downgrade) is refused, not
// deleted: never published, never moved aside as damaged, never dropped
// or folded by max_bytes, and still in the file for the newer build, in
// the log (an append replayed at Open) as in bbolt.
func TestNewerFormatIsKept(t *testing.T) {
	for _, mode := range []WhenFull{Drop, Downsample} {
		for _, where := range []string{"bbolt", "log"} {
			t.Run(mode.String()+"/"+where, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "buffer.db")
				ctx := context.Background()
				ts := time.Now().Add(-time.Hour).UTC()
				mk := func(i int) *reading.Reading {
					return &reading.Reading{DeviceID: "pi-1", Sensor: fmt.Sprintf("sim-%d", i%2), Kind: "sim",
						TS: ts.Add(time.Duration(i) * time.Second), TimeSynced: true,
						Values: map[string]float64{reading.Temperature: 20 + float64(i%7)}}
				}
				b, err := Open(path, Options{MaxBytes: 1 << 20, WhenFull: mode})
				if err != nil {
					t.Fatal(err)
				}
				r0, r1 := mk(0), mk(1)
				if err := b.Append(ctx, r0, r1); err != nil {
					t.Fatal(err)
				}
				nseq := r1.Seq + 1
				// A value in a format from the future: byte 0 above valueFormatMax.
				newer := appendValue(nil, &reading.Reading{DeviceID: "pi-1", Seq: nseq, Sensor: "sim-0", Kind: "sim",
					TS: ts, TimeSynced: true, Values: map[string]float64{"x": 1}})
				newer[0] = valueFormatMax + 1
				if where == "log" {
					b.commitMu.Lock()
					b.mu.Lock()
					b.st.addPending(nseq, newer)
					log := appendWAL(nil, b.st.epoch, walAppend, nseq, newer)
					if err := writeSync(b.wal, log, b.st.walOff); err != nil {
						t.Fatal(err)
					}
					b.st.walOff += int64(len(log))
					b.st.durable = nseq
					b.mu.Unlock()
					b.commitMu.Unlock()
					// Leave the log unreplayed: close bbolt without the writer's checkpoint.
					close(b.quit)
					b.closed = true
					<-b.writerDone
					_ = b.wal.Close()
					_ = b.db.Close()
				} else {
					if err := b.Close(); err != nil {
						t.Fatal(err)
					}
					db, err := bolt.Open(path, 0o600, nil)
					if err != nil {
						t.Fatal(err)
					}
					err = db.Update(func(tx *bolt.Tx) error {
						rb := tx.Bucket([]byte(bucketReadings))
						if err := rb.Put(seqKey(nseq), newer); err != nil {
							return err
						}
						cnt, _ := loadCounters(tx)
						cnt.count++
						cnt.live += uint64(keyLen + len(newer))
						if err := rb.SetSequence(nseq); err != nil {
							return err
						}
						return cnt.save(tx)
					})
					if err != nil {
						t.Fatal(err)
					}
					_ = db.Close()
				}
				b, err = Open(path, Options{MaxBytes: 1 << 20, WhenFull: mode})
				if err != nil {
					t.Fatalf("Open with a newer record: %v", err)
				}
				defer b.Close()
				recs, err := b.Peek(0, 100)
				if err != nil || len(recs) != 2 || recs[0].Seq != r0.Seq || recs[1].Seq != r1.Seq {
					t.Fatalf("Peek = %+v, %v: want seqs %d and %d only", recs, err, r0.Seq, r1.Seq)
				}
				if err := b.Delete(ctx, r0.Seq, r1.Seq); err != nil {
					t.Fatal(err)
				}
				wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				if err := b.Wait(wctx, r1.Seq); err == nil {
					t.Fatal("Wait returned for a record Peek never hands out")
				}
				// Fill well past max_bytes: drops or folds must leave it alone.
				for i := 0; i < 60; i++ {
					rs := make([]*reading.Reading, 200)
					for j := range rs {
						rs[j] = mk(10 + i*200 + j)
					}
					if err := b.Append(ctx, rs...); err != nil {
						t.Fatal(err)
					}
				}
				rep, err := b.Verify(ctx)
				if err != nil || !rep.OK() || rep.Newer != 1 || rep.Damaged != 0 {
					t.Fatalf("Verify = %+v, %v: want OK with one newer record", rep, err)
				}
				st, err := b.Stats()
				if st.Folded+st.DroppedBytes == 0 {
					t.Fatalf("Stats = %+v: the bound never acted", st)
				}
				if err != nil || st.Damaged != 0 || st.OldestSeq != nseq {
					t.Fatalf("Stats = %+v, %v: want the newer record kept as the oldest, nothing damaged", st, err)
				}
				err = b.read(func(s *state, tx *bolt.Tx) error {
					if v := tx.Bucket([]byte(bucketReadings)).Get(seqKey(nseq)); string(v) != string(newer) && (len(s.pending) == 0 || string(s.pending[0].val) != string(newer)) {
						return fmt.Errorf("the newer record is gone or changed")
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
