package buffer

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

type opKind int

const (
	opAppend opKind = iota
	opDelete
	opExclusive // runs alone, after a checkpoint: Update, Purge
)

// request is one caller's operation waiting for the writer.
type request struct {
	kind opKind
	rs   []*reading.Reading
	seqs []uint64
	fn   func() error // opExclusive
	done chan error
}

func (r *request) size() int { return len(r.rs) + len(r.seqs) }

// maxBatch bounds one commit's work so a flood of callers cannot make a
// single log write (and its memory) arbitrarily large.
const maxBatch = 20000

// idleCheckpoint: after this long without requests, the log is moved into
// bbolt, so a restart replays little and the memory is returned.
const idleCheckpoint = time.Second

// Append stores rs durably: it assigns each r.Seq (monotonic, never reused),
// stores the wire bytes, and returns after they are fsynced. Concurrent and
// quick successive calls share one write and one fsync (group commit). ctx
// is only consulted before the readings are handed to the writer; once
// handed over Append waits for the commit, so a nil error always means
// durable and a non-nil error means the caller must treat rs as not stored
// (their Seq is reset to 0).
func (b *Buffer) Append(ctx context.Context, rs ...*reading.Reading) error {
	if len(rs) == 0 {
		return nil
	}
	for _, r := range rs {
		if err := checkReading(r); err != nil {
			return err
		}
	}
	return b.submit(ctx, &request{kind: opAppend, rs: rs, done: make(chan error, 1)})
}

// Delete removes the records with the given seqs, durably, in any order;
// unknown seqs (already deleted or dropped by a bound) are ignored.
func (b *Buffer) Delete(ctx context.Context, seqs ...uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	return b.submit(ctx, &request{kind: opDelete, seqs: seqs, done: make(chan error, 1)})
}

// exclusive runs fn in the writer after a checkpoint, so fn sees everything
// in bbolt and nothing else writes meanwhile.
func (b *Buffer) exclusive(ctx context.Context, fn func() error) error {
	return b.submit(ctx, &request{kind: opExclusive, fn: fn, done: make(chan error, 1)})
}

func (b *Buffer) submit(ctx context.Context, req *request) error {
	if b.readOnly {
		return ErrReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		return ErrClosed
	}
	// Fast path: when no commit is running, commit here, saving the two
	// goroutine switches of a hand-over to the writer.
	// Whatever queued meanwhile joins this commit.
	if req.kind != opExclusive && b.commitMu.TryLock() {
		b.runBatch(b.fill([]*request{req}), false)
		b.commitMu.Unlock()
		b.closeMu.RUnlock()
		return <-req.done
	}
	select {
	case b.reqs <- req:
	case <-ctx.Done():
		b.closeMu.RUnlock()
		return ctx.Err()
	}
	b.closeMu.RUnlock()
	return <-req.done
}

// writer is the single goroutine that changes the buffer: it takes every
// request that is waiting, logs them with one write and one fsync, and
// answers them all; it checkpoints the log into bbolt when it grows or
// when the buffer is idle.
func (b *Buffer) writer() {
	defer close(b.writerDone)
	ageTick := time.NewTicker(b.opts.AgeInterval)
	defer ageTick.Stop()
	idle := time.NewTimer(idleCheckpoint)
	defer idle.Stop()
	lastAge := time.Time{}
	var batch []*request
	for {
		batch = batch[:0]
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-ageTick.C:
		case <-b.foldKick:
			b.commitMu.Lock()
			b.runPass()
			b.commitMu.Unlock()
			continue
		case <-b.quarantine:
			b.commitMu.Lock()
			_ = b.moveDamaged(b.takeSuspects()) // logged
			b.commitMu.Unlock()
			continue
		case <-idle.C:
			if quiet := time.Since(time.Unix(0, b.lastCommit.Load())); quiet < idleCheckpoint {
				idle.Reset(idleCheckpoint - quiet)
				continue
			}
			b.commitMu.Lock()
			if b.checkpoint() == nil {
				b.growWAL()
			}
			b.commitMu.Unlock()
			idle.Reset(idleCheckpoint)
			continue
		case <-b.quit:
			// closed is set, so nothing more can be queued: finish what is,
			// and a pass that is due, so a clean stop leaves the file
			// within MaxBytes.
			for len(b.reqs) > 0 {
				batch = append(batch, <-b.reqs)
			}
			b.commitMu.Lock()
			b.runBatch(batch, false)
			b.runPass()
			b.checkpoint()
			b.commitMu.Unlock()
			return
		}
		b.commitMu.Lock()
		batch = b.fill(batch)
		now := b.opts.Now()
		ageDue := now.Sub(lastAge) >= b.opts.AgeInterval || now.Before(lastAge)
		if ageDue {
			lastAge = now
		}
		b.runBatch(batch, ageDue)
		b.commitMu.Unlock()
		idle.Reset(idleCheckpoint)
	}
}

// fill adds the queued requests to batch, up to maxBatch readings and
// stopping after an exclusive one (which must run last, alone).
func (b *Buffer) fill(batch []*request) []*request {
	n := 0
	for _, r := range batch {
		n += r.size()
	}
	for n < maxBatch && (len(batch) == 0 || batch[len(batch)-1].kind != opExclusive) {
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
			n += r.size()
		default:
			return batch
		}
	}
	return batch
}

// runBatch runs the batch's appends and deletes as one commit, and its
// exclusive requests (at most one, last) alone after a checkpoint. A
// commit that leaves the buffer over MaxBytes in downsample mode wakes the
// writer for a pass instead of running it here, so the append that crossed
// returns at once (on the fast path its caller would wait for the pass).
// The caller holds commitMu.
func (b *Buffer) runBatch(batch []*request, ageDue bool) {
	defer b.lastCommit.Store(time.Now().UnixNano())
	batch, excl := splitExclusive(batch)
	if len(batch) > 0 || ageDue {
		if err := b.commitAndAnswer(batch, ageDue); err == nil && b.foldDue() {
			b.foldWanted = true
			select {
			case b.foldKick <- struct{}{}:
			default: // a pass is due already
			}
		}
	}
	if excl != nil {
		b.runExclusive(excl)
	}
}

// splitExclusive takes off the exclusive request fill leaves last, if any.
func splitExclusive(batch []*request) ([]*request, *request) {
	if n := len(batch); n > 0 && batch[n-1].kind == opExclusive {
		return batch[:n-1], batch[n-1]
	}
	return batch, nil
}

// commitAndAnswer commits the batch's appends and deletes and answers each
// request. The caller holds commitMu.
func (b *Buffer) commitAndAnswer(batch []*request, ageDue bool) error {
	if b.st.walOff >= walCheckpointAt || len(b.st.deleted) >= maxDeletedBeforeCheckpoint {
		b.checkpoint()
	}
	if b.st.unconfirmed {
		if ts, ok := firstSynced(batch); ok {
			b.confirmFloor(ts)
		}
	}
	err := b.commit(batch, ageDue)
	for _, req := range batch {
		if err != nil {
			for _, r := range req.rs {
				r.Seq = 0
			}
		}
		req.done <- err
	}
	return err
}

// runExclusive runs an exclusive request after a checkpoint. The caller
// holds commitMu.
func (b *Buffer) runExclusive(excl *request) {
	err := b.checkpoint()
	if err == nil {
		err = excl.fn()
	}
	excl.done <- err
}

// runPass runs the downsampling pass a commit asked for, if any, then the
// exclusive request that came during it. The caller holds commitMu.
func (b *Buffer) runPass() {
	wanted := b.foldWanted
	b.foldWanted = false
	if wanted && b.foldDue() {
		b.downsample()
	}
	if excl := b.heldExcl; excl != nil {
		b.heldExcl = nil
		b.runExclusive(excl)
	}
}

// serveDuringPass commits the appends and deletes waiting while a
// downsampling pass runs, between two of its chunks, so the sensor loops
// and the confirmations wait for one chunk, not for the pass. An exclusive
// request stops the serving (what came after it waits, in order) and runs
// after the pass. The caller (foldTx) holds commitMu and checkpoints next.
func (b *Buffer) serveDuringPass() {
	if b.heldExcl != nil {
		return
	}
	batch, excl := splitExclusive(b.fill(nil))
	b.heldExcl = excl
	if len(batch) == 0 {
		return
	}
	b.lastCommit.Store(time.Now().UnixNano())
	_ = b.commitAndAnswer(batch, false) // an error is answered to each request
}

// maxDeletedBeforeCheckpoint bounds the deleted set that readers skip over.
const maxDeletedBeforeCheckpoint = 20000

// drops counts what one commit removed because of the bounds.
type drops struct{ bytes, age uint64 }

// commit applies the batch to the in-memory state, logs it with one write
// and fsync, and then makes the appends visible to readers.
func (b *Buffer) commit(batch []*request, ageDue bool) error {
	var logBuf []byte
	var d drops
	appended := false
	err := b.applyLocked(func(bucket func() *bolt.Bucket) error {
		s := b.st
		for _, req := range batch {
			switch req.kind {
			case opAppend:
				if s.next+uint64(len(req.rs)) > maxSaneSeq {
					return fmt.Errorf("seq would pass 2^53 (next %d)", s.next+1)
				}
				for _, r := range req.rs {
					r.Seq = s.next + 1
					val := appendValue(make([]byte, 0, headerLen+len(r.Sensor)+256), r)
					s.addPending(r.Seq, val)
					logBuf = appendWAL(logBuf, s.epoch, walAppend, r.Seq, val)
					appended = true
				}
			case opDelete:
				rb := bucket()
				for _, seq := range req.seqs {
					if s.remove(rb, seq) {
						logBuf = appendWAL(logBuf, s.epoch, walDelete, seq, nil)
					}
				}
			}
		}
		var err error
		if ageDue {
			if logBuf, d.age, err = b.dropAged(bucket(), logBuf); err != nil {
				return err
			}
		}
		if s.cnt.live > uint64(b.opts.MaxBytes) && b.opts.WhenFull == Drop {
			logBuf, d.bytes, err = b.dropOverBytes(bucket(), logBuf)
		}
		return err
	})
	if err == nil && len(logBuf) > 0 {
		err = writeSync(b.wal, logBuf, b.st.walOff)
		b.walSize = max(b.walSize, b.st.walOff+int64(len(logBuf)))
	}
	if err != nil {
		err = wrapNoSpace(fmt.Errorf("buffer %s: commit: %w", b.path, err))
		b.commitLog.fail(b.log, "buffer commit failed; the readings and deletes of this commit are not stored",
			"err", err, "requests", len(batch))
		if rerr := b.reload(); rerr != nil {
			b.log.Error("buffer reload failed", "err", rerr)
		}
		return err
	}
	b.commitLog.ok(b.log, "buffer commits work again")
	b.mu.Lock()
	b.st.walOff += int64(len(logBuf))
	b.st.durable = b.st.next
	b.mu.Unlock()
	if d.bytes > 0 || d.age > 0 {
		b.logDrops(d)
	}
	if appended {
		b.wake()
	}
	return nil
}

// applyLocked runs fn on the state under the write lock. bucket opens a
// bbolt read transaction on first use (deletes and drops check bbolt;
// appends alone do not need it).
func (b *Buffer) applyLocked(fn func(bucket func() *bolt.Bucket) error) (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer guard(&err)()
	var tx *bolt.Tx
	defer func() {
		if tx != nil {
			_ = tx.Rollback()
		}
	}()
	bucket := func() *bolt.Bucket {
		if tx == nil {
			var err error
			if tx, err = b.db.Begin(false); err != nil {
				panic(err) // turned into an error by guard
			}
		}
		return tx.Bucket([]byte(bucketReadings))
	}
	return fn(bucket)
}

// checkpoint moves the log's changes into bbolt with one synced bbolt
// transaction and starts a new log epoch. On failure nothing changes: the
// log keeps growing and the next checkpoint tries again.
func (b *Buffer) checkpoint() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.st.dirty() {
		return nil
	}
	if err := b.update(b.st.checkpointTx); err != nil {
		err = wrapNoSpace(err)
		b.ckptLog.fail(b.log, "buffer checkpoint failed; the log keeps the data", "err", err)
		return err
	}
	b.ckptLog.ok(b.log, "buffer checkpoints work again")
	b.st.reset()
	return nil
}

// reload rebuilds the state from bbolt and the log, after a failed commit
// left the in-memory state ahead of the disk.
func (b *Buffer) reload() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := loadFromDisk(b.db, b.path, b.log)
	if err != nil {
		return err
	}
	b.st = st
	return nil
}

func (b *Buffer) logDrops(d drops) {
	b.mu.RLock()
	cnt := b.st.cnt
	b.mu.RUnlock()
	if d.bytes > 0 {
		b.log.Warn("buffer over max_bytes: dropped oldest readings",
			"dropped", d.bytes, "max_bytes", b.opts.MaxBytes, "dropped_total", cnt.droppedBytes, "remaining", cnt.count)
	}
	if d.age > 0 {
		b.log.Warn("buffer over max_age: dropped expired readings",
			"dropped", d.age, "max_age", b.opts.MaxAge, "dropped_total", cnt.droppedAge, "remaining", cnt.count)
	}
}

// dropOverBytes removes the oldest records until the live bytes fit MaxBytes.
func (b *Buffer) dropOverBytes(rb *bolt.Bucket, logBuf []byte) ([]byte, uint64, error) {
	s := b.st
	if s.cnt.live <= uint64(b.opts.MaxBytes) {
		return logBuf, 0, nil
	}
	var victims []uint64
	live := s.cnt.live
	err := s.each(rb, 0, s.next, func(seq uint64, val []byte) bool {
		if len(val) > 0 && val[0] > valueFormatMax { // a newer build's: kept for it
			return true
		}
		victims = append(victims, seq)
		live -= uint64(keyLen + len(val))
		return live > uint64(b.opts.MaxBytes)
	})
	var n uint64
	for _, seq := range victims {
		if s.remove(rb, seq) {
			s.cnt.droppedBytes++
			n++
			logBuf = appendWAL(logBuf, s.epoch, walDropBytes, seq, nil)
		}
	}
	return logBuf, n, err
}

// ageScanLimit bounds how many unsynced readings one pass looks past.
const ageScanLimit = 10000

// dropAged removes the oldest records whose synced timestamp is older than
// MaxAge. Readings are in seq order, which is time order for a synced
// clock, so the scan stops at the first synced reading still young enough.
// Readings from an unsynced clock are not aged (their ts is not trusted).
func (b *Buffer) dropAged(rb *bolt.Bucket, logBuf []byte) ([]byte, uint64, error) {
	s := b.st
	cutoff := b.opts.Now().Add(-b.opts.MaxAge)
	var victims []uint64
	skipped := 0
	var perr error
	err := s.each(rb, 0, s.next, func(seq uint64, val []byte) bool {
		h, err := parseValue(val)
		if err != nil { // damaged: its ts cannot be trusted either; the writer moves it aside
			b.noteBad(seq, err)
		}
		if err != nil || !h.synced {
			skipped++
			return skipped <= ageScanLimit
		}
		if !h.ts.Before(cutoff) {
			return false
		}
		victims = append(victims, seq)
		return true
	})
	if err == nil {
		err = perr
	}
	var n uint64
	for _, seq := range victims {
		if s.remove(rb, seq) {
			s.cnt.droppedAge++
			n++
			logBuf = appendWAL(logBuf, s.epoch, walDropAge, seq, nil)
		}
	}
	return logBuf, n, err
}

// update runs fn in a bbolt write transaction with the fault guard.
func (b *Buffer) update(fn func(tx *bolt.Tx) error) (err error) {
	defer guard(&err)()
	if err := b.db.Update(fn); err != nil {
		return fmt.Errorf("buffer %s: %w", b.path, err)
	}
	return nil
}

var errNothing = errors.New("nothing to commit")
