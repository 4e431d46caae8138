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
)

// request is one caller's Append or Delete waiting for the next commit.
type request struct {
	kind opKind
	rs   []*reading.Reading
	seqs []uint64
	done chan error
}

func (r *request) size() int { return len(r.rs) + len(r.seqs) }

// maxBatch bounds one transaction's work so a flood of callers cannot make
// a single commit (and its memory) arbitrarily large.
const maxBatch = 20000

// Append stores rs durably: it assigns each r.Seq (monotonic, never reused),
// writes the wire bytes, and returns after the transaction is fsynced.
// Concurrent and quick successive calls share one transaction. ctx is only
// consulted before the readings are handed to the writer; once handed over
// Append waits for the commit, so a nil error always means durable and a
// non-nil error means none of rs was stored (their Seq is left 0).
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
	select {
	case b.reqs <- req:
	case <-ctx.Done():
		b.closeMu.RUnlock()
		return ctx.Err()
	}
	b.closeMu.RUnlock()
	return <-req.done
}

// writer is the single goroutine that writes: it takes every request that
// is waiting, commits them in one transaction, and answers them all.
func (b *Buffer) writer() {
	defer close(b.writerDone)
	ticker := time.NewTicker(b.opts.AgeInterval)
	defer ticker.Stop()
	lastAge := time.Time{}
	var batch []*request
	for {
		batch = batch[:0]
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-ticker.C:
		case <-b.quit:
			// Close holds no more senders (closed is set), so what is
			// queued now is everything; commit it before leaving.
			for {
				select {
				case r := <-b.reqs:
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				b.run(batch, false)
			}
			return
		}
		n := 0
		for _, r := range batch {
			n += r.size()
		}
	fill:
		for n < maxBatch {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
				n += r.size()
			default:
				break fill
			}
		}
		now := b.opts.Now()
		ageDue := now.Sub(lastAge) >= b.opts.AgeInterval || now.Before(lastAge)
		if ageDue {
			lastAge = now
		}
		if len(batch) == 0 && !ageDue {
			continue
		}
		b.run(batch, ageDue)
	}
}

// run commits one batch and answers its callers.
func (b *Buffer) run(batch []*request, ageDue bool) {
	appended, err := b.commit(batch, ageDue)
	if err != nil {
		for _, req := range batch {
			for _, r := range req.rs {
				r.Seq = 0
			}
		}
		b.log.Error("buffer commit failed", "err", err, "requests", len(batch))
	}
	for _, req := range batch {
		req.done <- err
	}
	if appended > 0 {
		b.wake()
	}
}

// drops counts what one commit removed because of the bounds.
type drops struct{ bytes, age uint64 }

func (b *Buffer) commit(batch []*request, ageDue bool) (appended int, err error) {
	var d drops
	err = b.update(func(tx *bolt.Tx) error {
		rb := tx.Bucket([]byte(bucketReadings))
		// Keys only grow, so packed pages waste nothing; splits still happen at the page size.
		rb.FillPercent = 1.0
		cnt, err := loadCounters(tx)
		if err != nil {
			return err
		}
		// bbolt keeps references to Put's slices until commit, so values
		// are carved from arenas that are never reused within the tx.
		var arena []byte
		for _, req := range batch {
			switch req.kind {
			case opAppend:
				for _, r := range req.rs {
					seq, err := rb.NextSequence()
					if err != nil {
						return err
					}
					r.Seq = seq
					if cap(arena)-len(arena) < 512 {
						arena = make([]byte, 0, 64<<10)
					}
					start := len(arena)
					arena = appendValue(arena, r)
					v := arena[start:len(arena):len(arena)]
					if err := rb.Put(seqKey(seq), v); err != nil {
						return err
					}
					cnt.count++
					cnt.live += uint64(keyLen + len(v))
					appended++
				}
			case opDelete:
				for _, s := range req.seqs {
					k := seqKey(s)
					v := rb.Get(k)
					if v == nil {
						continue
					}
					cnt.count--
					cnt.live -= uint64(keyLen + len(v))
					if err := rb.Delete(k); err != nil {
						return err
					}
				}
			}
		}
		if ageDue {
			if d.age, err = b.dropAged(rb, &cnt); err != nil {
				return err
			}
		}
		if d.bytes, err = b.dropOverBytes(rb, &cnt); err != nil {
			return err
		}
		if d.bytes > 0 || d.age > 0 {
			cnt.droppedBytes += d.bytes
			cnt.droppedAge += d.age
			b.logDrops(d, cnt)
		} else if len(batch) == 0 {
			return errNothing // a timer pass that found nothing: no commit, no fsync
		}
		return cnt.save(tx)
	})
	if errors.Is(err, errNothing) {
		err = nil
	}
	return appended, err
}

var errNothing = errors.New("nothing to commit")

func (b *Buffer) logDrops(d drops, cnt counters) {
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
func (b *Buffer) dropOverBytes(rb *bolt.Bucket, cnt *counters) (uint64, error) {
	if cnt.live <= uint64(b.opts.MaxBytes) {
		return 0, nil
	}
	var keys [][]byte
	live := cnt.live
	c := rb.Cursor()
	for k, v := c.First(); k != nil && live > uint64(b.opts.MaxBytes); k, v = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
		live -= uint64(len(k) + len(v))
	}
	return b.deleteKeys(rb, keys, cnt)
}

// ageScanLimit bounds how many unsynced readings one pass looks past.
const ageScanLimit = 10000

// dropAged removes the oldest records whose synced timestamp is older than
// MaxAge. Readings are in seq order, which is time order for synced clocks,
// so the scan stops at the first synced reading still young enough.
func (b *Buffer) dropAged(rb *bolt.Bucket, cnt *counters) (uint64, error) {
	cutoff := b.opts.Now().Add(-b.opts.MaxAge)
	var keys [][]byte
	skipped := 0
	c := rb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		h, err := parseValue(v)
		if err != nil {
			return 0, err
		}
		if !h.synced {
			if skipped++; skipped > ageScanLimit {
				break
			}
			continue
		}
		if !h.ts.Before(cutoff) {
			break
		}
		keys = append(keys, append([]byte(nil), k...))
	}
	return b.deleteKeys(rb, keys, cnt)
}

func (b *Buffer) deleteKeys(rb *bolt.Bucket, keys [][]byte, cnt *counters) (uint64, error) {
	for _, k := range keys {
		v := rb.Get(k)
		if v == nil {
			continue
		}
		cnt.count--
		cnt.live -= uint64(len(k) + len(v))
		if err := rb.Delete(k); err != nil {
			return 0, err
		}
	}
	return uint64(len(keys)), nil
}

// update runs fn in a write transaction with the same fault guard as view.
func (b *Buffer) update(fn func(tx *bolt.Tx) error) (err error) {
	defer guard(&err)()
	if err := b.db.Update(fn); err != nil {
		return fmt.Errorf("buffer %s: %w", b.path, err)
	}
	return nil
}
