package buffer

import (
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// A record whose checksum (or header, or payload) fails is never handed to
// the publisher: the bytes are wrong, and a flipped digit in a temperature
// would still decode and be believed downstream. Read paths (Peek, Stats,
// the age check) skip it and note its seq; the writer then moves it out of
// the queue into the bucket "damaged" of the same file, counts it
// (Stats.Damaged) and logs it as an ERROR. Moving, not just skipping, keeps
// Count honest and stops every Peek from tripping over it again; keeping
// the bytes (the newest damagedKeep records) leaves something to look at,
// since most of a damaged reading is usually intact.
const (
	bucketDamaged = "damaged"
	metaDamaged   = "damaged_total"
	// damagedKeep bounds the damaged bucket; older entries are deleted (logged).
	damagedKeep = 1000
)

func loadDamaged(tx *bolt.Tx) (uint64, error) {
	v := tx.Bucket([]byte(bucketMeta)).Get([]byte(metaDamaged))
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: damaged total of %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// noteDamaged remembers seq for the writer to move aside (read paths hold
// only read locks) and wakes it.
func (b *Buffer) noteDamaged(seq uint64) {
	if b.readOnly {
		return
	}
	b.suspectMu.Lock()
	if b.suspects == nil {
		b.suspects = map[uint64]struct{}{}
	}
	b.suspects[seq] = struct{}{}
	b.suspectMu.Unlock()
	select {
	case b.quarantine <- struct{}{}:
	default:
	}
}

// noteBad is noteDamaged for a record whose header failed to parse with
// err: a damaged record is moved aside; one of a newer format is kept.
func (b *Buffer) noteBad(seq uint64, err error) {
	if isDamaged(err) {
		b.noteDamaged(seq)
	}
}

func (b *Buffer) takeSuspects() []uint64 {
	b.suspectMu.Lock()
	defer b.suspectMu.Unlock()
	out := make([]uint64, 0, len(b.suspects))
	for s := range b.suspects {
		out = append(out, s)
	}
	b.suspects = nil
	slices.Sort(out)
	return out
}

// moveDamaged moves the records seqs, if they are still there and still
// fail their checks, from the queue to the damaged bucket, in one bbolt
// transaction after a checkpoint. The caller holds commitMu (or is Open,
// before the writer runs).
func (b *Buffer) moveDamaged(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	if err := b.checkpoint(); err != nil {
		return err
	}
	type moved struct {
		seq   uint64
		cause error
	}
	var done []moved
	var trimmed int
	var total uint64
	err := b.chunkTx(func(tx *bolt.Tx, cnt *counters) error {
		rb := tx.Bucket([]byte(bucketReadings))
		db, err := tx.CreateBucketIfNotExists([]byte(bucketDamaged))
		if err != nil {
			return err
		}
		for _, seq := range seqs {
			k := seqKey(seq)
			v := rb.Get(k)
			if v == nil {
				continue
			}
			_, cause := decodeRecord(seq, v)
			if !isDamaged(cause) {
				continue
			}
			if err := db.Put(k, append([]byte(nil), v...)); err != nil {
				return err
			}
			cnt.count--
			cnt.live -= uint64(len(k) + len(v))
			if err := rb.Delete(k); err != nil {
				return err
			}
			done = append(done, moved{seq, cause})
		}
		if len(done) == 0 {
			return errNothing
		}
		if trimmed, err = trimDamaged(db); err != nil {
			return err
		}
		if total, err = loadDamaged(tx); err != nil {
			return err
		}
		total += uint64(len(done))
		return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaDamaged), binary.BigEndian.AppendUint64(nil, total))
	})
	if err != nil {
		b.log.Error("buffer: cannot move damaged records aside; they stay unpublished", "err", err, "seqs", len(seqs))
		return err
	}
	if len(done) == 0 {
		return nil
	}
	// Log before Stats shows the count, so whoever sees it there finds
	// the records named in the log.
	for _, m := range done {
		b.log.Error("buffer record is damaged: moved aside, never published",
			"seq", m.seq, "err", m.cause, "bucket", bucketDamaged, "damaged_total", total)
	}
	b.mu.Lock()
	b.st.damaged = total
	b.mu.Unlock()
	if trimmed > 0 {
		b.log.Warn("buffer: deleted the oldest damaged records", "deleted", trimmed, "kept", damagedKeep)
	}
	return nil
}

// trimDamaged deletes the oldest entries past damagedKeep.
func trimDamaged(db *bolt.Bucket) (int, error) {
	n := 0
	c := db.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() { // a cursor sees this transaction's puts
		n++
	}
	var old [][]byte
	for k, _ := c.First(); k != nil && n-len(old) > damagedKeep; k, _ = c.Next() {
		old = append(old, append([]byte(nil), k...))
	}
	for _, k := range old {
		if err := db.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(old), nil
}
