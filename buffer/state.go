package buffer

import (
	"encoding/binary"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// memRec is an appended record that is in the log but not yet in bbolt.
type memRec struct {
	seq  uint64
	val  []byte // stored value; never modified once created
	dead bool   // deleted or dropped before the checkpoint
}

// state is the buffer's content as bbolt plus the log describe it. bbolt
// holds everything up to the last checkpoint; pending and deleted are the
// log's changes on top. Guarded by Buffer.mu; changed only by the writer.
type state struct {
	next    uint64 // highest seq assigned
	durable uint64 // highest seq whose append is fsynced: readers see no further
	base    uint64 // every seq <= base is in bbolt or gone; pending seqs are > base
	cnt     counters
	pending []memRec       // ascending seq
	deleted map[uint64]int // bbolt records removed since the checkpoint -> stored size
	epoch   uint64         // log records are valid iff they carry it
	walOff  int64          // where the next log write goes

	// floor is the sequence a fresh start (or the first synced reading
	// after it) set: every seq handed out since is above it. unconfirmed
	// says that the floor came from a clock not yet known to be right, so
	// the first synced reading may raise it (see floor.go).
	floor       uint64
	unconfirmed bool

	damaged  uint64   // records ever moved aside as damaged (damaged.go)
	folded   uint64   // readings ever folded into aggregates (downsample.go)
	suspects []uint64 // damaged records the open-time check found; Open moves them
}

const (
	metaEpoch       = "wal_epoch"
	metaFloor       = "seq_floor"
	metaUnconfirmed = "seq_floor_unconfirmed"
)

func loadState(tx *bolt.Tx) (*state, error) {
	cnt, err := loadCounters(tx)
	if err != nil {
		return nil, err
	}
	var epoch uint64
	if v := tx.Bucket([]byte(bucketMeta)).Get([]byte(metaEpoch)); v != nil {
		if len(v) != 8 {
			return nil, fmt.Errorf("%w: wal epoch of %d bytes", ErrCorrupt, len(v))
		}
		epoch = binary.BigEndian.Uint64(v)
	}
	mb := tx.Bucket([]byte(bucketMeta))
	var floor uint64
	if v := mb.Get([]byte(metaFloor)); v != nil {
		if len(v) != 8 {
			return nil, fmt.Errorf("%w: seq floor of %d bytes", ErrCorrupt, len(v))
		}
		floor = binary.BigEndian.Uint64(v)
	}
	damaged, err := loadDamaged(tx)
	if err != nil {
		return nil, err
	}
	var folded uint64
	if v := mb.Get([]byte(metaFolded)); len(v) == 8 {
		folded = binary.BigEndian.Uint64(v)
	}
	seq := tx.Bucket([]byte(bucketReadings)).Sequence()
	return &state{next: seq, durable: seq, base: seq, cnt: cnt, deleted: map[uint64]int{}, epoch: epoch,
		floor: floor, unconfirmed: mb.Get([]byte(metaUnconfirmed)) != nil, damaged: damaged, folded: folded}, nil
}

// addPending records an append.
func (s *state) addPending(seq uint64, val []byte) {
	s.pending = append(s.pending, memRec{seq: seq, val: val})
	s.next = seq
	s.cnt.count++
	s.cnt.live += uint64(keyLen + len(val))
}

// remove deletes seq if it is stored and reports whether it was.
func (s *state) remove(rb *bolt.Bucket, seq uint64) bool {
	if seq > s.base {
		i := sort.Search(len(s.pending), func(i int) bool { return s.pending[i].seq >= seq })
		if i == len(s.pending) || s.pending[i].seq != seq || s.pending[i].dead {
			return false
		}
		s.pending[i].dead = true
		s.cnt.count--
		s.cnt.live -= uint64(keyLen + len(s.pending[i].val))
		return true
	}
	if _, gone := s.deleted[seq]; gone {
		return false
	}
	v := rb.Get(seqKey(seq))
	if v == nil {
		return false
	}
	s.deleted[seq] = len(v)
	s.cnt.count--
	s.cnt.live -= uint64(keyLen + len(v))
	return true
}

// each calls fn for the stored records with after < seq <= limit in seq
// order, bbolt's first then the log's, until fn returns false. Values from
// bbolt are valid only inside tx.
func (s *state) each(rb *bolt.Bucket, after, limit uint64, fn func(seq uint64, val []byte) bool) error {
	if after < s.base {
		c := rb.Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
			seq, err := keySeq(k)
			if err != nil {
				return err
			}
			if seq > limit {
				return nil
			}
			if _, gone := s.deleted[seq]; gone {
				continue
			}
			if !fn(seq, v) {
				return nil
			}
		}
	}
	i := sort.Search(len(s.pending), func(i int) bool { return s.pending[i].seq > after })
	for ; i < len(s.pending) && s.pending[i].seq <= limit; i++ {
		if s.pending[i].dead {
			continue
		}
		if !fn(s.pending[i].seq, s.pending[i].val) {
			return nil
		}
	}
	return nil
}

// eachBack calls fn for the stored records with seq <= limit, newest
// first, the log's then bbolt's, until fn returns false. Values from bbolt
// are valid only inside tx.
func (s *state) eachBack(rb *bolt.Bucket, limit uint64, fn func(seq uint64, val []byte) bool) error {
	for i := len(s.pending) - 1; i >= 0; i-- {
		if p := s.pending[i]; !p.dead && p.seq <= limit {
			if !fn(p.seq, p.val) {
				return nil
			}
		}
	}
	c := rb.Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		seq, err := keySeq(k)
		if err != nil {
			return err
		}
		if _, gone := s.deleted[seq]; gone || seq > limit {
			continue
		}
		if !fn(seq, v) {
			return nil
		}
	}
	return nil
}

// last returns the newest stored record at or below limit.
func (s *state) last(rb *bolt.Bucket, limit uint64) (uint64, []byte, error) {
	for i := len(s.pending) - 1; i >= 0; i-- {
		if p := s.pending[i]; !p.dead && p.seq <= limit {
			return p.seq, p.val, nil
		}
	}
	c := rb.Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		seq, err := keySeq(k)
		if err != nil {
			return 0, nil, err
		}
		if _, gone := s.deleted[seq]; !gone && seq <= limit {
			return seq, v, nil
		}
	}
	return 0, nil, nil
}

// replay applies the log's valid records of the current epoch. It stops at
// the first torn, stale or out-of-sequence record and returns how many
// intact records of this epoch lie beyond that point: zero after a crash
// (a torn tail), more if the log itself was damaged.
func (s *state) replay(rb *bolt.Bucket, log []byte) (lost int) {
	recs, _ := parseWAL(log, s.epoch)
	off := int64(0)
	defer func() {
		s.walOff = off
		if lost = countEpoch(log[off:], s.epoch); lost > 0 {
			// Those seqs were acknowledged and may have been published:
			// never hand them out again.
			s.next = max(s.next, maxWALSeq(log))
		}
		s.durable = s.next
	}()
	for _, r := range recs {
		switch r.op {
		case walAppend:
			if r.seq != s.next+1 {
				return
			}
			if _, err := parseValue(r.val); isDamaged(err) {
				return
			}
			s.addPending(r.seq, append([]byte(nil), r.val...))
		case walDelete:
			s.remove(rb, r.seq)
		case walDropBytes:
			if s.remove(rb, r.seq) {
				s.cnt.droppedBytes++
			}
		case walDropAge:
			if s.remove(rb, r.seq) {
				s.cnt.droppedAge++
			}
		}
		off += r.size
	}
	return
}

// checkpointTx writes the log's changes into bbolt and advances the epoch;
// the caller resets the in-memory part (reset) once the tx has committed.
func (s *state) checkpointTx(tx *bolt.Tx) error {
	rb := tx.Bucket([]byte(bucketReadings))
	rb.FillPercent = 1.0 // keys only grow: packed pages waste nothing
	for _, p := range s.pending {
		if !p.dead {
			if err := rb.Put(seqKey(p.seq), p.val); err != nil {
				return err
			}
		}
	}
	for seq := range s.deleted {
		if err := rb.Delete(seqKey(seq)); err != nil {
			return err
		}
	}
	if err := rb.SetSequence(s.next); err != nil {
		return err
	}
	if err := s.cnt.save(tx); err != nil {
		return err
	}
	if err := s.saveFloor(tx); err != nil {
		return err
	}
	return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaEpoch), binary.BigEndian.AppendUint64(nil, s.epoch+1))
}

func (s *state) saveFloor(tx *bolt.Tx) error {
	mb := tx.Bucket([]byte(bucketMeta))
	if s.floor == 0 { // a buffer from before floors, counting from 1: nothing to keep
		return nil
	}
	if err := mb.Put([]byte(metaFloor), binary.BigEndian.AppendUint64(nil, s.floor)); err != nil {
		return err
	}
	if s.unconfirmed {
		return mb.Put([]byte(metaUnconfirmed), []byte{1})
	}
	return mb.Delete([]byte(metaUnconfirmed))
}

func (s *state) reset() {
	s.pending = nil
	s.deleted = map[uint64]int{}
	s.base = s.next
	s.durable = s.next
	s.epoch++
	s.walOff = 0
}

// dirty reports whether the log holds anything bbolt does not.
func (s *state) dirty() bool { return s.walOff > 0 || len(s.pending) > 0 || len(s.deleted) > 0 }
