package buffer

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// WhenFull says what the buffer does when its live bytes pass MaxBytes.
type WhenFull int

const (
	// Downsample replaces the oldest readings by per-sensor aggregates
	// (count, min, max, mean per field, first and last time) over a
	// window, halving the resolution of the oldest part again each time
	// the buffer fills: level 1 is FoldWindow, level L+1 twice level L, up
	// to FoldLevels. Only when even the coarsest level does not fit are
	// records dropped (counted in Stats.DroppedBytes, by the readings they
	// stood for). It is the zero value: what the agent runs with.
	Downsample WhenFull = iota
	// Drop deletes the oldest readings, as the buffer always did.
	Drop
)

// String is the configuration's spelling.
func (w WhenFull) String() string {
	if w == Drop {
		return "drop"
	}
	return "downsample"
}

const (
	// FoldWindow is the window of a level-1 aggregate.
	FoldWindow = time.Minute
	// FoldLevels is the coarsest level: FoldWindow << (FoldLevels-1), 512
	// minutes. At 4 sensors an aggregate of that level takes ~350 bytes per
	// sensor per 8.5 hours: 16 MiB of them would span years.
	FoldLevels = 10
	// foldChunk bounds the records one fold transaction reads, so memory
	// and the time readers wait stay small whatever MaxBytes is.
	foldChunk = 5000
	// metaFolded keeps Stats.Folded; a separate key, so the counters'
	// fixed size (which older builds check) is unchanged.
	metaFolded = "folded"
)

// foldTarget is where a downsampling pass stops: a quarter below MaxBytes,
// so a pass runs once per quarter of the buffer filled, not on every commit.
func (b *Buffer) foldTarget() uint64 { return uint64(b.opts.MaxBytes - b.opts.MaxBytes/4) }

// foldDue reports whether a commit left the buffer over MaxBytes in
// downsample mode. The caller holds commitMu (so st cannot change).
func (b *Buffer) foldDue() bool {
	return b.opts.WhenFull == Downsample && b.st.cnt.live > uint64(b.opts.MaxBytes)
}

// foldReport is what one downsampling pass did, for the log line.
type foldReport struct {
	folded  uint64         // readings folded into level-1 aggregates
	merged  map[int]uint64 // aggregates of level L merged into level L+1
	created uint64         // aggregates written
	dropped uint64         // readings lost (an aggregate counts as its n)
	expired uint64         // readings of aggregates dropped by max_age
	freed   int64          // live bytes the pass's chunks freed (net of the aggregates written)
	took    time.Duration
}

// downsample runs one pass: it moves the log into bbolt and then, level by
// level from the finest, folds the oldest half of that level into the next
// coarser one until the live bytes are at foldTarget (again from the
// finest, if one round was not enough); when a round frees nothing it
// drops, coarsest and oldest first. Each chunk is one bbolt
// transaction that deletes what it folds and writes the aggregates with new
// seqs, so a crash leaves every reading either folded or not. Between
// chunks the appends and deletes that came meanwhile are committed, so a
// pass of seconds (a full 256 MiB buffer; more on a Pi Zero) holds no
// sensor loop up for more than a chunk. The writer runs it, holding
// commitMu.
func (b *Buffer) downsample() {
	start := time.Now()
	if err := b.checkpoint(); err != nil {
		return // logged; the next commit over MaxBytes tries again
	}
	target := b.foldTarget()
	rep := foldReport{merged: map[int]uint64{}}
	err := b.dropExpired(&rep)
	// Counted again while folding frees room but the appends served
	// meanwhile keep the buffer over the target: those are foldable too,
	// and dropping instead would lose what a fold keeps.
	for err == nil && b.live() > target {
		before := rep.freed
		err = b.foldRounds(target, &rep)
		if rep.freed <= before { // not b.live(): appends served meanwhile add to it
			break
		}
	}
	for L := FoldLevels; err == nil && L >= 0 && b.live() > target; L-- {
		err = b.dropLevel(L, target, &rep)
	}
	rep.took = time.Since(start)
	if err != nil {
		b.foldLog.fail(b.log, "buffer downsampling failed; oldest readings are kept over max_bytes", "err", err)
	} else {
		b.foldLog.ok(b.log, "buffer downsampling works again")
	}
	if rep.expired > 0 {
		b.log.Warn("buffer over max_age: dropped expired aggregates", "readings", rep.expired, "max_age", b.opts.MaxAge)
	}
	if rep.created > 0 || rep.dropped > 0 || rep.expired > 0 {
		b.logFold(rep)
		b.wake()
	}
}

// foldRounds counts the foldable records of each level and folds rounds
// of them until the live bytes are at target. One round is enough unless
// a single commit brought more than the room a round frees (half of the
// readings); a round that frees nothing means everything left is at the
// coarsest level or cannot be folded.
func (b *Buffer) foldRounds(target uint64, rep *foldReport) error {
	counts, err := b.census()
	for round := 0; err == nil && round < 2*FoldLevels && b.live() > target; round++ {
		before := rep.freed
		for L := 0; err == nil && L < FoldLevels && b.live() > target; L++ {
			if k := (counts[L] + 1) / 2; k > 0 {
				var made uint64
				made, err = b.fold(L, k, rep)
				counts[L] -= k
				counts[L+1] += made
			}
		}
		if rep.freed <= before {
			break
		}
	}
	return err
}

func (b *Buffer) live() uint64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.st.cnt.live
}

func (b *Buffer) logFold(rep foldReport) {
	b.mu.RLock()
	cnt, folded := b.st.cnt, b.st.folded
	b.mu.RUnlock()
	args := []any{"folded", rep.folded, "aggregates", rep.created, "max_bytes", b.opts.MaxBytes,
		"folded_total", folded, "remaining", cnt.count, "live_bytes", cnt.live, "took", rep.took.Round(time.Millisecond)}
	for L, n := range rep.merged {
		args = append(args, fmt.Sprintf("merged_level_%d", L), n)
	}
	if rep.dropped > 0 {
		b.log.Warn("buffer over max_bytes at the coarsest level: dropped oldest",
			append(args, "dropped", rep.dropped, "dropped_total", cnt.droppedBytes)...)
		return
	}
	b.log.Warn("buffer over max_bytes: folded oldest readings into aggregates", args...)
}

// foldable reports a record's level, and whether it can be folded: a
// reading taken before the clock synced cannot (its time is not known), nor
// can a damaged record or one of a newer format.
func foldable(v []byte) (level int, ok bool) {
	h, err := parseValue(v)
	if err != nil {
		return 0, false
	}
	return h.level, h.level > 0 || h.synced
}

// census counts the foldable records of each level. Not through b.read:
// the committer may hold closeMu's read lock already, and a Close waiting
// for the write lock would then block a second read lock for ever.
func (b *Buffer) census() ([FoldLevels + 1]uint64, error) {
	var n [FoldLevels + 1]uint64
	b.mu.RLock()
	defer b.mu.RUnlock()
	err := viewGuarded(b.db, func(tx *bolt.Tx) error {
		return b.st.each(tx.Bucket([]byte(bucketReadings)), 0, b.st.durable, func(_ uint64, v []byte) bool {
			if L, ok := foldable(v); ok && L <= FoldLevels {
				n[L]++
			}
			return true
		})
	})
	return n, err
}

// acc accumulates one aggregate.
type acc struct {
	r             reading.Reading // DeviceID, Sensor, Kind, TS (first)
	n             uint64
	to            time.Time
	first, last   uint64
	sum, min, max map[string]float64
	cnt           map[string]uint64
}

func newAcc(r *reading.Reading) *acc {
	return &acc{r: reading.Reading{DeviceID: r.DeviceID, Sensor: r.Sensor, Kind: r.Kind, TS: r.TS, TimeSynced: true},
		to: r.TS, first: math.MaxUint64, sum: map[string]float64{}, min: map[string]float64{},
		max: map[string]float64{}, cnt: map[string]uint64{}}
}

// add folds in a reading (seq is its key) or, when r.Agg is set, an
// aggregate: its means weighted by their counts, its covers and its own seq.
func (a *acc) add(seq uint64, r *reading.Reading) {
	to, n, lo, hi := r.TS, uint64(1), seq, seq
	if g := r.Agg; g != nil {
		to, n, lo = g.To, g.N, g.Covers[0]
	}
	if r.TS.Before(a.r.TS) {
		a.r.TS = r.TS
	}
	if to.After(a.to) {
		a.to = to
	}
	a.n += n
	a.first, a.last = min(a.first, lo), max(a.last, hi)
	for k, v := range r.Values {
		c, vlo, vhi := uint64(1), v, v
		if g := r.Agg; g != nil {
			c, vlo, vhi = g.FieldCount(k), g.Min[k], g.Max[k]
		}
		if _, seen := a.cnt[k]; !seen {
			a.min[k], a.max[k] = vlo, vhi
		}
		a.sum[k] += v * float64(c)
		a.cnt[k] += c
		a.min[k], a.max[k] = min(a.min[k], vlo), max(a.max[k], vhi)
	}
}

// reading is the aggregate as a record of the given level.
func (a *acc) reading(level int) *reading.Reading {
	r := a.r
	r.Values = make(map[string]float64, len(a.sum))
	g := &reading.Aggregate{N: a.n, Level: level, To: a.to, Covers: [2]uint64{a.first, a.last}, Min: a.min, Max: a.max}
	for k, s := range a.sum {
		// Clamped: rounding must not put a mean outside its range.
		r.Values[k] = min(max(s/float64(a.cnt[k]), a.min[k]), a.max[k])
		if a.cnt[k] != a.n {
			if g.Count == nil {
				g.Count = map[string]uint64{}
			}
			g.Count[k] = a.cnt[k]
		}
	}
	r.Agg = g
	return &r
}

type foldKey struct {
	sensor string
	window int64
}

// fold folds the oldest k foldable records of level L into aggregates of
// level L+1 (windows of FoldWindow << L, aligned to the Unix epoch), one
// chunk per transaction, and returns how many aggregates it wrote.
func (b *Buffer) fold(L int, k uint64, rep *foldReport) (made uint64, err error) {
	window := int64(FoldWindow) << L
	after := uint64(0)
	what := countMerged
	if L == 0 {
		what = countFolded
	}
	for k > 0 {
		var done bool
		err = b.foldTx(rep, func(tx *bolt.Tx, s *state) (puts []*reading.Reading, dels [][]byte, _ uint64, err error) {
			rb := tx.Bucket([]byte(bucketReadings))
			accs := map[foldKey]*acc{}
			c := rb.Cursor()
			key, v := c.Seek(seqKey(after + 1))
			for n := 0; key != nil && n < foldChunk && k > 0; key, v = c.Next() {
				n++
				seq, err := keySeq(key)
				if err != nil {
					return nil, nil, 0, err
				}
				after = seq
				if lv, ok := foldable(v); !ok || lv != L {
					continue
				}
				r, err := decodeRecord(seq, v)
				if err != nil { // damaged after all: left for the writer to move aside
					b.noteBad(seq, err)
					continue
				}
				fk := foldKey{r.Sensor, r.TS.UnixNano() / window}
				a := accs[fk]
				if a == nil {
					a = newAcc(&r)
					accs[fk] = a
				}
				a.add(seq, &r)
				dels = append(dels, append([]byte(nil), key...))
				k--
				if L == 0 {
					rep.folded++
				} else {
					rep.merged[L]++
				}
			}
			done = key == nil
			for _, a := range accs {
				puts = append(puts, a.reading(L+1))
			}
			sort.Slice(puts, func(i, j int) bool { // seq order is time order within a level
				if !puts[i].TS.Equal(puts[j].TS) {
					return puts[i].TS.Before(puts[j].TS)
				}
				return puts[i].Sensor < puts[j].Sensor
			})
			made += uint64(len(puts))
			rep.created += uint64(len(puts))
			return puts, dels, 0, nil
		}, what)
		if err != nil || done {
			return made, err
		}
	}
	return made, nil
}

// foldCount says what a fold chunk's deletes count as.
type foldCount int

const (
	countMerged    foldCount = iota // aggregates merged into coarser ones: nothing lost
	countFolded                     // readings folded into level-1 aggregates (Stats.Folded)
	countDropBytes                  // lost past the coarsest level (Stats.DroppedBytes)
	countDropAge                    // aggregates older than MaxAge (Stats.DroppedAge)
)

// foldTx runs one fold chunk: fn returns the aggregates to write (seqs
// are assigned here, above every seq handed out), the keys to delete, and
// how many readings those deletes lose (dropped, not folded).
// It holds b.mu, so readers see the chunk whole. Before the chunk it
// serves the appends and deletes that came meanwhile (serveDuringPass).
func (b *Buffer) foldTx(rep *foldReport, fn func(tx *bolt.Tx, s *state) ([]*reading.Reading, [][]byte, uint64, error), what foldCount) error {
	if b.chunkHook != nil {
		b.chunkHook()
	}
	b.serveDuringPass()
	if err := b.checkpoint(); err != nil { // a chunk writes bbolt directly: nothing may wait in the log
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.st
	cnt, next, folded := s.cnt, s.next, s.folded
	err := b.update(func(tx *bolt.Tx) error {
		puts, dels, lost, err := fn(tx, s)
		if err != nil {
			return err
		}
		switch what {
		case countDropBytes:
			cnt.droppedBytes += lost
		case countDropAge:
			cnt.droppedAge += lost
		}
		rb := tx.Bucket([]byte(bucketReadings))
		rb.FillPercent = 1.0
		for _, k := range dels {
			v := rb.Get(k)
			if v == nil {
				continue
			}
			cnt.count--
			cnt.live -= uint64(len(k) + len(v))
			if err := rb.Delete(k); err != nil {
				return err
			}
		}
		if next+uint64(len(puts)) > maxSaneSeq {
			return fmt.Errorf("seq would pass 2^53 (next %d)", next+1)
		}
		for _, r := range puts {
			next++
			r.Seq = next
			val := appendValue(nil, r)
			if n := len(val); n > reading.MaxPayload {
				return fmt.Errorf("aggregate of %s is %d bytes", r.Sensor, n)
			}
			if err := rb.Put(seqKey(next), val); err != nil {
				return err
			}
			cnt.count++
			cnt.live += uint64(keyLen + len(val))
		}
		if what == countFolded {
			folded += uint64(len(dels))
		}
		if err := rb.SetSequence(next); err != nil {
			return err
		}
		if err := cnt.save(tx); err != nil {
			return err
		}
		return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaFolded), binary.BigEndian.AppendUint64(nil, folded))
	})
	if err != nil {
		return wrapNoSpace(err)
	}
	rep.freed += int64(s.cnt.live) - int64(cnt.live)
	s.cnt, s.folded = cnt, folded
	s.next, s.durable, s.base = next, next, next
	return nil
}

// dropLevel deletes level-L records (L 0: every reading, synced or not),
// oldest first, until the live bytes are at target. It counts the readings
// lost: an aggregate counts as the readings it stood for.
func (b *Buffer) dropLevel(L int, target uint64, rep *foldReport) error {
	after := uint64(0)
	for b.live() > target {
		var done bool
		err := b.foldTx(rep, func(tx *bolt.Tx, s *state) ([]*reading.Reading, [][]byte, uint64, error) {
			var dels [][]byte
			var dropped uint64
			live := s.cnt.live
			c := tx.Bucket([]byte(bucketReadings)).Cursor()
			key, v := c.Seek(seqKey(after + 1))
			for n := 0; key != nil && n < foldChunk && live > target; key, v = c.Next() {
				n++
				seq, err := keySeq(key)
				if err != nil {
					return nil, nil, 0, err
				}
				after = seq
				h, err := parseValue(v)
				if err != nil || h.level != L {
					b.noteBad(seq, err)
					continue
				}
				lost := uint64(1)
				if L > 0 {
					if r, err := decodeRecord(seq, v); err == nil && r.Agg != nil {
						lost = r.Agg.N
					}
				}
				dropped += lost
				rep.dropped += lost
				live -= uint64(len(key) + len(v))
				dels = append(dels, append([]byte(nil), key...))
			}
			done = key == nil
			return nil, dels, dropped, nil
		}, countDropBytes)
		if err != nil || done {
			return err
		}
	}
	return nil
}

// dropExpired drops the aggregates whose first time is older than MaxAge.
// The writer's max_age scan stops at the first young record in seq order,
// which is time order for readings only: an aggregate has a newer seq
// than the readings left after it, so the scan would never reach it. The
// pass walks everything anyway, so it ages them.
func (b *Buffer) dropExpired(rep *foldReport) error {
	cutoff := b.opts.Now().Add(-b.opts.MaxAge)
	after := uint64(0)
	for {
		var done bool
		var expired uint64
		err := b.foldTx(rep, func(tx *bolt.Tx, s *state) ([]*reading.Reading, [][]byte, uint64, error) {
			var dels [][]byte
			c := tx.Bucket([]byte(bucketReadings)).Cursor()
			key, v := c.Seek(seqKey(after + 1))
			for n := 0; key != nil && n < foldChunk; key, v = c.Next() {
				n++
				seq, err := keySeq(key)
				if err != nil {
					return nil, nil, 0, err
				}
				after = seq
				if h, err := parseValue(v); err != nil || h.level == 0 || !h.ts.Before(cutoff) {
					continue
				}
				r, err := decodeRecord(seq, v)
				if err != nil || r.Agg == nil {
					b.noteBad(seq, err)
					continue
				}
				expired += r.Agg.N
				dels = append(dels, append([]byte(nil), key...))
			}
			done = key == nil
			return nil, dels, expired, nil
		}, countDropAge)
		if err != nil {
			return err
		}
		rep.expired += expired
		if done {
			return nil
		}
	}
}
