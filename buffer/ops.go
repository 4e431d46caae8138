package buffer

import (
	"context"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Stats describes the buffer's content. All fields come from counters kept
// in the file and the first and last record, so it is cheap at any size.
type Stats struct {
	Count        uint64    `json:"count"`
	OldestSeq    uint64    `json:"oldest_seq"`
	NewestSeq    uint64    `json:"newest_seq"`
	OldestTS     time.Time `json:"oldest_ts"`
	NewestTS     time.Time `json:"newest_ts"`
	LastSeq      uint64    `json:"last_seq"`      // highest seq ever assigned (survives purges)
	LiveBytes    int64     `json:"live_bytes"`    // keys + stored values
	FileBytes    int64     `json:"file_bytes"`    // size of the bbolt file; bbolt reuses freed pages but never shrinks
	FreeBytes    int64     `json:"free_bytes"`    // pages free for reuse inside the file
	DroppedBytes uint64    `json:"dropped_bytes"` // readings dropped by max_bytes, ever
	DroppedAge   uint64    `json:"dropped_age"`   // readings dropped by max_age, ever
	MaxBytes     int64     `json:"max_bytes,omitempty"`
	MaxAge       Duration  `json:"max_age,omitempty"`
}

// Duration marshals as a Go duration string ("720h0m0s").
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Stats reports the buffer's size and position.
func (b *Buffer) Stats() (Stats, error) {
	var s Stats
	err := b.view(func(tx *bolt.Tx) error {
		cnt, err := loadCounters(tx)
		if err != nil {
			return err
		}
		rb := tx.Bucket([]byte(bucketReadings))
		s.Count, s.LiveBytes = cnt.count, int64(cnt.live)
		s.DroppedBytes, s.DroppedAge = cnt.droppedBytes, cnt.droppedAge
		s.LastSeq = rb.Sequence()
		c := rb.Cursor()
		if k, v := c.First(); k != nil {
			if s.OldestSeq, s.OldestTS, err = seqTS(k, v); err != nil {
				return err
			}
		}
		if k, v := c.Last(); k != nil {
			if s.NewestSeq, s.NewestTS, err = seqTS(k, v); err != nil {
				return err
			}
		}
		st := tx.DB().Stats()
		s.FreeBytes = int64(st.FreePageN+st.PendingPageN) * int64(tx.DB().Info().PageSize)
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("buffer stats: %w", err)
	}
	s.FileBytes = fileSize(b.path)
	if !b.readOnly {
		s.MaxBytes, s.MaxAge = b.opts.MaxBytes, Duration(b.opts.MaxAge)
	}
	return s, nil
}

func seqTS(k, v []byte) (uint64, time.Time, error) {
	seq, err := keySeq(k)
	if err != nil {
		return 0, time.Time{}, err
	}
	h, err := parseValue(v)
	return seq, h.ts, err
}

// updateChunk bounds the memory and lock time of one Update/Purge transaction.
const updateChunk = 5000

// Update rewrites every stored reading for which fn returns true (the agent
// uses it to correct timestamps once NTP has synced). fn may change
// anything but Seq, which is kept. It works in chunks of transactions, so a
// crash midway leaves some readings rewritten and the rest untouched, each
// one whole. It returns how many readings were rewritten.
func (b *Buffer) Update(ctx context.Context, fn func(r *reading.Reading) bool) (int, error) {
	if b.readOnly {
		return 0, ErrReadOnly
	}
	total := 0
	next := uint64(1)
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var done bool
		err := b.writeTx(func(tx *bolt.Tx) error {
			rb := tx.Bucket([]byte(bucketReadings))
			cnt, err := loadCounters(tx)
			if err != nil {
				return err
			}
			type put struct {
				k, v []byte
				old  int
			}
			var puts []put
			c := rb.Cursor()
			n := 0
			k, v := c.Seek(seqKey(next))
			for ; k != nil && n < updateChunk; k, v = c.Next() {
				n++
				seq, err := keySeq(k)
				if err != nil {
					return err
				}
				r, err := decodeRecord(seq, v)
				if err != nil {
					return err
				}
				if !fn(&r) {
					continue
				}
				r.Seq = seq
				if err := checkReading(&r); err != nil {
					return fmt.Errorf("seq %d: rewritten reading: %w", seq, err)
				}
				puts = append(puts, put{seqKey(seq), appendValue(nil, &r), len(v)})
			}
			if k == nil {
				done = true
			} else {
				next, _ = keySeq(k)
			}
			for _, p := range puts {
				if err := rb.Put(p.k, p.v); err != nil {
					return err
				}
				cnt.live = cnt.live - uint64(p.old) + uint64(len(p.v))
			}
			total += len(puts)
			if len(puts) == 0 {
				return errNothing
			}
			return cnt.save(tx)
		})
		if err != nil {
			return total, err
		}
		if done {
			return total, nil
		}
	}
}

// Purge deletes every reading with seq <= upto (math.MaxUint64: all) and
// returns how many it deleted. The sequence is kept: later appends continue
// above the highest seq ever assigned.
func (b *Buffer) Purge(ctx context.Context, upto uint64) (int, error) {
	if b.readOnly {
		return 0, ErrReadOnly
	}
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n := 0
		err := b.writeTx(func(tx *bolt.Tx) error {
			rb := tx.Bucket([]byte(bucketReadings))
			cnt, err := loadCounters(tx)
			if err != nil {
				return err
			}
			if upto == math.MaxUint64 {
				// Dropping the bucket frees its pages in one step; the
				// sequence is carried over to the new bucket.
				seq := rb.Sequence()
				n = int(cnt.count)
				if err := tx.DeleteBucket([]byte(bucketReadings)); err != nil {
					return err
				}
				nb, err := tx.CreateBucket([]byte(bucketReadings))
				if err != nil {
					return err
				}
				if err := nb.SetSequence(seq); err != nil {
					return err
				}
				cnt.count, cnt.live = 0, 0
				return cnt.save(tx)
			}
			var keys [][]byte
			c := rb.Cursor()
			for k, _ := c.First(); k != nil && len(keys) < updateChunk; k, _ = c.Next() {
				if s, err := keySeq(k); err != nil || s > upto {
					break
				}
				keys = append(keys, append([]byte(nil), k...))
			}
			if len(keys) == 0 {
				return errNothing
			}
			d, err := b.deleteKeys(rb, keys, &cnt)
			n = int(d)
			if err != nil {
				return err
			}
			return cnt.save(tx)
		})
		total += n
		if err != nil || n == 0 || upto == math.MaxUint64 {
			return total, err
		}
	}
}

// writeTx is a write transaction from a caller's goroutine (not the
// writer's); bbolt serialises it with the writer's commits.
func (b *Buffer) writeTx(fn func(tx *bolt.Tx) error) error {
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	err := b.update(fn)
	if err != nil && isNothing(err) {
		return nil
	}
	return err
}

func isNothing(err error) bool { return err != nil && errorsIs(err, errNothing) }

// VerifyReport is what Verify found.
type VerifyReport struct {
	Count     uint64   `json:"count"`
	LiveBytes int64    `json:"live_bytes"`
	Problems  []string `json:"problems,omitempty"`
}

// OK reports whether no problem was found.
func (v *VerifyReport) OK() bool { return len(v.Problems) == 0 }

// Verify checks the whole file: every record decodes, seqs increase, the
// counters match, and bbolt's own consistency check (Tx.Check) passes. It
// reads every page, so it is for the CLI and tests, not the hot path.
func (b *Buffer) Verify(ctx context.Context) (VerifyReport, error) {
	var rep VerifyReport
	err := b.view(func(tx *bolt.Tx) error {
		cnt, err := loadCounters(tx)
		if err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
		w, werr := walk(tx, func(uint64, *reading.Reading) error { return ctx.Err() })
		rep.Count, rep.LiveBytes = w.count, int64(w.live)
		if werr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rep.Problems = append(rep.Problems, werr.Error())
		} else if err == nil && (w.count != cnt.count || w.live != cnt.live) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("counters say %d readings / %d bytes, the file holds %d / %d",
				cnt.count, cnt.live, w.count, w.live))
		}
		if w.last > tx.Bucket([]byte(bucketReadings)).Sequence() {
			rep.Problems = append(rep.Problems, fmt.Sprintf("record seq %d above the bucket sequence", w.last))
		}
		if werr != nil {
			return nil // the tree is damaged; bbolt's check could fault in a goroutine we cannot guard
		}
		for cerr := range tx.Check() {
			rep.Problems = append(rep.Problems, "bbolt: "+cerr.Error())
		}
		return nil
	})
	if err != nil && !isCorrupt(err) {
		return rep, err
	}
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	return rep, nil
}

// Each calls fn for every record with from <= seq <= to, in seq order, in
// one read transaction (a consistent snapshot). For export.
func (b *Buffer) Each(ctx context.Context, from, to uint64, fn func(seq uint64, payload []byte) error) error {
	return b.view(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(bucketReadings)).Cursor()
		for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
			seq, err := keySeq(k)
			if err != nil {
				return err
			}
			if seq > to {
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			h, err := parseValue(v)
			if err != nil {
				return fmt.Errorf("seq %d: %w", seq, err)
			}
			if err := fn(seq, h.payload); err != nil {
				return err
			}
		}
		return nil
	})
}

// Last returns up to n of the newest records, newest first.
func (b *Buffer) Last(n int) ([]Record, error) {
	var out []Record
	err := b.view(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(bucketReadings)).Cursor()
		for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
			seq, err := keySeq(k)
			if err != nil {
				return err
			}
			h, err := parseValue(v)
			if err != nil {
				return fmt.Errorf("seq %d: %w", seq, err)
			}
			out = append(out, Record{Seq: seq, Sensor: string(h.sensor), Payload: append([]byte(nil), h.payload...)})
		}
		return nil
	})
	return out, err
}
