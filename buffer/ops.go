package buffer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Stats describes the buffer's content. All fields come from counters kept
// in the file and the first and last record, so it is cheap at any size.
type Stats struct {
	Count     uint64    `json:"count"`
	OldestSeq uint64    `json:"oldest_seq"`
	NewestSeq uint64    `json:"newest_seq"`
	OldestTS  time.Time `json:"oldest_ts"`
	NewestTS  time.Time `json:"newest_ts"`
	LastSeq   uint64    `json:"last_seq"` // highest seq ever assigned (survives purges)
	// SeqFloor: every seq this buffer handed out is above it (0 for a
	// buffer created before floors existed, which counted from 1). Seqs
	// above it are consecutive, except for one jump when a buffer started
	// with a clock behind sees its first synced reading.
	SeqFloor     uint64 `json:"seq_floor"`
	LiveBytes    int64  `json:"live_bytes"`    // keys + stored values
	FileBytes    int64  `json:"file_bytes"`    // size of the bbolt file; bbolt reuses freed pages but never shrinks
	FreeBytes    int64  `json:"free_bytes"`    // pages free for reuse inside the file
	LogBytes     int64  `json:"log_bytes"`     // write-ahead log not yet checkpointed into the file
	DroppedBytes uint64 `json:"dropped_bytes"` // readings dropped by max_bytes, ever
	DroppedAge   uint64 `json:"dropped_age"`   // readings dropped by max_age, ever
	Damaged      uint64 `json:"damaged"`       // records that failed their checksum, moved aside unpublished, ever
	// Folded counts the readings ever folded into aggregates by a full
	// buffer in Downsample mode (each also counts in the aggregate's n).
	// In that mode DroppedBytes counts the readings lost past the coarsest
	// level, an aggregate counting as the readings it stood for.
	Folded   uint64   `json:"folded"`
	WhenFull string   `json:"when_full,omitempty"`
	MaxBytes int64    `json:"max_bytes,omitempty"`
	MaxAge   Duration `json:"max_age,omitempty"`

	// Held counts the newest readings held back from publishing by
	// Options.Hold (taken before the clock synced, waiting for their time
	// to be corrected); HeldUntil is when the oldest of them is let go if
	// the clock does not sync first. Zero without a hold.
	Held      uint64    `json:"held,omitempty"`
	HeldUntil time.Time `json:"held_until,omitzero"`
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
	err := b.read(func(st *state, tx *bolt.Tx) error {
		rb := tx.Bucket([]byte(bucketReadings))
		s.Count, s.LiveBytes = st.cnt.count, int64(st.cnt.live)
		s.DroppedBytes, s.DroppedAge, s.Damaged, s.Folded = st.cnt.droppedBytes, st.cnt.droppedAge, st.damaged, st.folded
		s.LastSeq, s.SeqFloor = st.durable, st.floor
		// A damaged record's ts is left zero (and the record reported to
		// the writer): Stats must keep answering, health depends on it.
		tsOf := func(seq uint64, v []byte) time.Time {
			h, err := parseValue(v)
			if err != nil {
				b.noteBad(seq, err)
			}
			return h.ts
		}
		err := st.each(rb, 0, st.durable, func(seq uint64, v []byte) bool {
			s.OldestSeq, s.OldestTS = seq, tsOf(seq, v)
			return false
		})
		if err != nil {
			return err
		}
		seq, v, err := st.last(rb, st.durable)
		if err != nil {
			return err
		}
		if v != nil {
			s.NewestSeq, s.NewestTS = seq, tsOf(seq, v)
		}
		dbs := tx.DB().Stats()
		s.FreeBytes = int64(dbs.FreePageN+dbs.PendingPageN) * int64(tx.DB().Info().PageSize)
		s.LogBytes = st.walOff
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("buffer stats: %w", err)
	}
	s.FileBytes = fileSize(b.path)
	if b.opts.Hold != nil {
		n, rest, err := b.CountHeld(b.opts.Hold)
		if err != nil {
			return Stats{}, err
		}
		if n > 0 {
			s.Held, s.HeldUntil = n, b.opts.Now().Add(rest)
		}
	}
	if !b.readOnly {
		s.MaxBytes, s.MaxAge, s.WhenFull = b.opts.MaxBytes, Duration(b.opts.MaxAge), b.opts.WhenFull.String()
	}
	return s, nil
}

// CountHeld counts the readings hold would hold back from publishing (see
// Options.Hold; a read-only buffer has none of its own, so `edge-agent
// buffer stats` passes the agent's), and returns how much longer the oldest
// of them is held. It walks back from the newest reading and stops at the
// first one not held: a hold only ever covers the newest readings, since
// those taken before them are older, or of an earlier boot. (For the few
// seconds between the clock's sync and the agent's correction of the held
// readings, readings stamped after the sync wait behind them uncounted.)
func (b *Buffer) CountHeld(hold func(synced bool, boot reading.BootStamp) time.Duration) (n uint64, rest time.Duration, err error) {
	err = b.read(func(st *state, tx *bolt.Tx) error {
		return st.eachBack(tx.Bucket([]byte(bucketReadings)), st.durable, func(seq uint64, v []byte) bool {
			h, err := parseValue(v)
			if err != nil {
				b.noteBad(seq, err)
				return true // never published: it holds nothing back
			}
			d := time.Duration(0)
			if !h.synced {
				d = hold(false, h.boot)
			}
			if d <= 0 {
				return false
			}
			n, rest = n+1, d
			return true
		})
	})
	if err != nil {
		return 0, 0, fmt.Errorf("count held readings: %w", err)
	}
	return n, rest, nil
}

// updateChunk bounds the memory and lock time of one Update/Purge transaction.
const updateChunk = 5000

// Update rewrites every stored reading for which fn returns true (the agent
// uses it to correct timestamps once NTP has synced). fn may change
// anything but Seq, which is kept. It runs in the writer, after moving the
// log into bbolt, in chunks of transactions: a crash midway leaves some
// readings rewritten and the rest untouched, each one whole. Appends wait
// meanwhile. It returns how many readings were rewritten.
func (b *Buffer) Update(ctx context.Context, fn func(r *reading.Reading) bool) (int, error) {
	return b.rewrite(ctx, false, fn)
}

// UpdateUnsynced is Update for the readings taken while the clock was not
// synced (time_synced false), and cheaper: the others are not decoded. fn
// sees each reading's Boot stamp, when it has one (Options.Hold).
func (b *Buffer) UpdateUnsynced(ctx context.Context, fn func(r *reading.Reading) bool) (int, error) {
	return b.rewrite(ctx, true, fn)
}

func (b *Buffer) rewrite(ctx context.Context, onlyUnsynced bool, fn func(r *reading.Reading) bool) (total int, err error) {
	if b.readOnly {
		return 0, ErrReadOnly
	}
	defer func() {
		if total > 0 {
			b.wake() // held readings may have been corrected: Wait looks again
		}
	}()
	err = b.exclusive(ctx, func() error {
		next := uint64(1)
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			var done bool
			err := b.chunkTx(func(tx *bolt.Tx, cnt *counters) error {
				rb := tx.Bucket([]byte(bucketReadings))
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
					if onlyUnsynced && len(v) > 1 && v[1]&flagSynced != 0 {
						continue
					}
					r, err := decodeRecord(seq, v)
					if isDamaged(err) {
						b.noteDamaged(seq) // not rewritten: moved aside by the writer after Update
						continue
					}
					if isNewer(err) || r.Agg != nil { // kept as they are; an aggregate is always synced
						continue
					}
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
				return nil
			})
			if err != nil || done {
				return err
			}
		}
	})
	return total, err
}

// chunkTx runs one bbolt transaction of an exclusive operation (the log is
// empty then, so bbolt's counters are the buffer's) and publishes the new
// counters to readers. fn returning errNothing rolls back quietly.
func (b *Buffer) chunkTx(fn func(tx *bolt.Tx, cnt *counters) error) error {
	var cnt counters
	err := b.update(func(tx *bolt.Tx) error {
		var err error
		if cnt, err = loadCounters(tx); err != nil {
			return err
		}
		if err := fn(tx, &cnt); err != nil {
			return err
		}
		return cnt.save(tx)
	})
	if errors.Is(err, errNothing) {
		return nil
	}
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.st.cnt = cnt
	b.mu.Unlock()
	return nil
}

// Purge deletes every reading with seq <= upto (math.MaxUint64: all) and
// returns how many it deleted. The sequence is kept: later appends continue
// above the highest seq ever assigned.
func (b *Buffer) Purge(ctx context.Context, upto uint64) (int, error) {
	if b.readOnly {
		return 0, ErrReadOnly
	}
	total := 0
	err := b.exclusive(ctx, func() error {
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := 0
			err := b.chunkTx(func(tx *bolt.Tx, cnt *counters) error {
				rb := tx.Bucket([]byte(bucketReadings))
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
					cnt.count, cnt.live = 0, 0
					return nb.SetSequence(seq)
				}
				var keys [][]byte
				c := rb.Cursor()
				for k, v := c.First(); k != nil && len(keys) < updateChunk; k, v = c.Next() {
					if s, err := keySeq(k); err != nil || s > upto {
						break
					}
					keys = append(keys, append([]byte(nil), k...))
					cnt.count--
					cnt.live -= uint64(len(k) + len(v))
				}
				if len(keys) == 0 {
					return errNothing
				}
				for _, k := range keys {
					if err := rb.Delete(k); err != nil {
						return err
					}
				}
				n = len(keys)
				return nil
			})
			total += n
			if err != nil || n == 0 || upto == math.MaxUint64 {
				return err
			}
		}
	})
	return total, err
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Count     uint64   `json:"count"`
	LiveBytes int64    `json:"live_bytes"`
	LogBytes  int64    `json:"log_bytes"` // of records not yet checkpointed into bbolt
	Problems  []string `json:"problems,omitempty"`
	// Damaged counts the records in the queue that fail their checksum or
	// do not decode (each is also a problem; the agent moves them aside
	// when it finds them). DamagedAside is how many such records were
	// moved aside earlier and are kept in the file's "damaged" bucket.
	Damaged      uint64 `json:"damaged"`
	DamagedAside uint64 `json:"damaged_aside"`
	// Newer counts records of a format a newer build wrote (after a
	// downgrade): not a problem, kept unpublished for that build.
	Newer uint64 `json:"newer_format,omitempty"`
}

// OK reports whether no problem was found.
func (v *VerifyReport) OK() bool { return len(v.Problems) == 0 }

// Verify checks everything: every bbolt record passes its checksum and
// decodes (each one that does not is a problem), seqs increase,
// bbolt's counters match its content, bbolt's own consistency check
// (Tx.Check) passes, and the log's records on top decode and add up to the
// buffer's counters. It reads every page: for the CLI and tests.
func (b *Buffer) Verify(ctx context.Context) (VerifyReport, error) {
	var rep VerifyReport
	err := b.read(func(st *state, tx *bolt.Tx) error {
		problem := func(format string, a ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, a...)) }
		rep.LogBytes = st.walOff
		cnt, err := loadCounters(tx)
		if err != nil {
			problem("%v", err)
		}
		damaged := func(_ uint64, err error) {
			rep.Damaged++
			problem("%v", err)
		}
		w, werr := walk(tx, func(uint64, *reading.Reading) error { return ctx.Err() }, damaged)
		rep.Newer += w.newer
		if werr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			problem("%v", werr)
		} else if err == nil && (w.count != cnt.count || w.live != cnt.live) {
			problem("bbolt counters say %d readings / %d bytes, the file holds %d / %d", cnt.count, cnt.live, w.count, w.live)
		}
		if seq := tx.Bucket([]byte(bucketReadings)).Sequence(); w.last > seq {
			problem("record seq %d above the bucket sequence %d", w.last, seq)
		}
		if werr == nil { // on a damaged tree bbolt's check could fault in a goroutine we cannot guard
			for cerr := range tx.Check() {
				problem("bbolt: %v", cerr)
			}
		}
		// The whole buffer, bbolt and log merged, against the counters.
		var count, live uint64
		prev := uint64(0)
		err = st.each(tx.Bucket([]byte(bucketReadings)), 0, st.durable, func(seq uint64, v []byte) bool {
			if seq <= prev {
				problem("seq %d after %d", seq, prev)
			}
			prev = seq
			if seq > st.base {
				if _, err := decodeRecord(seq, v); isNewer(err) {
					rep.Newer++
				} else if err != nil {
					rep.Damaged++
					problem("log: %v", err)
				}
			}
			count++
			live += uint64(keyLen + len(v))
			return ctx.Err() == nil
		})
		if err != nil {
			problem("%v", err)
		}
		rep.Count, rep.LiveBytes = count, int64(live)
		if db := tx.Bucket([]byte(bucketDamaged)); db != nil {
			rep.DamagedAside = uint64(db.Stats().KeyN)
		}
		if count != st.cnt.count || live != st.cnt.live {
			problem("counters say %d readings / %d bytes, bbolt and the log hold %d / %d", st.cnt.count, st.cnt.live, count, live)
		}
		return ctx.Err()
	})
	if err != nil && !isCorrupt(err) {
		return rep, err
	}
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	return rep, nil
}

// Each calls fn for every record with from <= seq <= to, in seq order. It
// reads in windows, so a long export never blocks the writer; records
// appended or deleted meanwhile may or may not be seen.
func (b *Buffer) Each(ctx context.Context, from, to uint64, fn func(seq uint64, payload []byte) error) error {
	after := uint64(0)
	if from > 0 {
		after = from - 1
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		recs, err := b.collect(after, to, 1000, false)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r.Seq, r.Payload); err != nil {
				return err
			}
		}
		if len(recs) < 1000 {
			return nil
		}
		after = recs[len(recs)-1].Seq
	}
}

// Last returns up to n of the newest records, newest first.
func (b *Buffer) Last(n int) ([]Record, error) {
	var out []Record
	add := func(seq uint64, v []byte) error {
		h, err := parseValue(v)
		if err != nil { // damaged: never shown as a reading; moved aside by the writer (a newer format's: kept)
			b.noteBad(seq, err)
			return nil
		}
		out = append(out, Record{Seq: seq, Sensor: string(h.sensor), Payload: append([]byte(nil), h.payload...)})
		return nil
	}
	err := b.read(func(st *state, tx *bolt.Tx) error {
		for i := len(st.pending) - 1; i >= 0 && len(out) < n; i-- {
			if p := st.pending[i]; !p.dead && p.seq <= st.durable {
				if err := add(p.seq, p.val); err != nil {
					return err
				}
			}
		}
		c := tx.Bucket([]byte(bucketReadings)).Cursor()
		for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
			seq, err := keySeq(k)
			if err != nil {
				return err
			}
			if _, gone := st.deleted[seq]; gone {
				continue
			}
			if err := add(seq, v); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}
