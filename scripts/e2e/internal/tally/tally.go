// Package tally turns the records the e2e harness read from Kafka into the
// figures of its report: how many readings were produced, delivered, missing
// and duplicated, latency percentiles, and how long the pipeline took to
// catch up after each injected fault.
//
// It is pure bookkeeping over values, so it is table-tested without any
// server:
//
//	tl := tally.NewTimeline(floor, final, deliveries)
//	s := tl.Summary()          // produced, delivered, missing, duplicates
//	r := tl.Recovery(faultEnd) // when every reading taken before faultEnd was in Kafka
package tally

import (
	"math"
	"slices"
	"time"
)

// Delivery is one record read from Kafka.
type Delivery struct {
	Seq  uint64    // the reading's seq
	TS   time.Time // the reading's ts (when the sensor was read)
	Recv time.Time // when the harness's consumer received the record
}

// Range is an inclusive run of seqs.
type Range struct{ From, To uint64 }

// Len is the number of seqs in r.
func (r Range) Len() uint64 { return r.To - r.From + 1 }

// Summary counts deliveries against the seqs the agent produced.
type Summary struct {
	Produced   uint64  // seqs floor+1..final were written to the agent's buffer: final-floor of them
	Delivered  uint64  // distinct seqs in floor+1..final found in Kafka
	Missing    []Range // seqs in floor+1..final never found
	Duplicates uint64  // records beyond the first of each seq
	DupRate    float64 // Duplicates / Delivered
	Unexpected uint64  // distinct seqs outside floor+1..final (should be 0)
}

// MissingCount is the number of seqs in Missing.
func (s Summary) MissingCount() uint64 {
	var n uint64
	for _, r := range s.Missing {
		n += r.Len()
	}
	return n
}

// Timeline indexes deliveries by seq: for each seq, its ts and the time the
// first copy arrived.
type Timeline struct {
	floor   uint64
	final   uint64
	first   map[uint64]Delivery // earliest-received copy of each seq
	records uint64              // every record, duplicates included
}

// NewTimeline indexes ds; the agent produced the seqs floor+1..final (its
// buffer's seq floor and last seq).
func NewTimeline(floor, final uint64, ds []Delivery) *Timeline {
	t := &Timeline{floor: floor, final: final, first: make(map[uint64]Delivery, len(ds)), records: uint64(len(ds))}
	for _, d := range ds {
		if old, ok := t.first[d.Seq]; !ok || d.Recv.Before(old.Recv) {
			t.first[d.Seq] = d
		}
	}
	return t
}

// Has reports whether seq was delivered.
func (t *Timeline) Has(seq uint64) bool {
	_, ok := t.first[seq]
	return ok
}

// Summary counts produced, delivered, missing and duplicated readings.
func (t *Timeline) Summary() Summary {
	s := Summary{Produced: t.final - min(t.floor, t.final), Duplicates: t.records - uint64(len(t.first))}
	var open *Range
	for seq := t.floor + 1; seq <= t.final; seq++ {
		if _, ok := t.first[seq]; ok {
			s.Delivered++
			open = nil
			continue
		}
		if open == nil {
			s.Missing = append(s.Missing, Range{seq, seq})
			open = &s.Missing[len(s.Missing)-1]
		} else {
			open.To = seq
		}
	}
	for seq := range t.first {
		if seq > t.final || seq <= t.floor {
			s.Unexpected++
		}
	}
	if s.Delivered > 0 {
		s.DupRate = float64(s.Duplicates) / float64(s.Delivered)
	}
	return s
}

// Recovery describes how the pipeline caught up after a fault ended.
type Recovery struct {
	Target   uint64        // newest seq whose reading was taken at or before the fault's end
	Backlog  uint64        // seqs <= Target not yet in Kafka when the fault ended
	Duration time.Duration // from the fault's end until every seq <= Target was in Kafka (0 if already there)
	Complete bool          // false if some seq <= Target never arrived
}

// Recovery measures catch-up after a fault that ended at end. The target
// is the newest seq taken at or before end: the seq just below the first
// one taken after end (seqs follow time), or the final seq if none was.
// The pipeline has caught up once every seq up to the target has been
// received. Only seqs taken after since count, so a reading lost earlier
// is not charged to this fault (pass when the previous fault had settled,
// or the zero time).
func (t *Timeline) Recovery(since, end time.Time) Recovery {
	var r Recovery
	r.Target = t.lastTakenBy(end)
	floor := t.floor
	if !since.IsZero() {
		floor = max(floor, t.lastTakenBy(since))
	}
	r.Complete = true
	var last time.Time
	for seq := floor + 1; seq <= r.Target; seq++ {
		d, ok := t.first[seq]
		if !ok {
			r.Complete = false
			r.Backlog++
			continue
		}
		if d.Recv.After(end) {
			r.Backlog++
		}
		if d.Recv.After(last) {
			last = d.Recv
		}
	}
	if last.After(end) {
		r.Duration = last.Sub(end)
	}
	return r
}

// Resume is how long after end the first reading taken after end reached
// Kafka (how soon fresh data flowed again), and false if none did.
func (t *Timeline) Resume(end time.Time) (time.Duration, bool) {
	var first time.Time
	for seq, d := range t.first {
		if seq <= t.final && d.TS.After(end) && (first.IsZero() || d.Recv.Before(first)) {
			first = d.Recv
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return first.Sub(end), true
}

// Burst measures delivery speed after end: from the first arrival after
// end until until, how many distinct seqs first arrived, and over how long.
func (t *Timeline) Burst(end, until time.Time) (n int, span time.Duration) {
	var first time.Time
	for _, d := range t.first {
		if d.Recv.After(end) && !d.Recv.After(until) && (first.IsZero() || d.Recv.Before(first)) {
			first = d.Recv
		}
	}
	if first.IsZero() {
		return 0, 0
	}
	for _, d := range t.first {
		if !d.Recv.Before(first) && !d.Recv.After(until) {
			n++
		}
	}
	return n, until.Sub(first)
}

// lastTakenBy is the newest seq taken at or before at: one less than the
// first delivered seq taken after it, or the final seq.
func (t *Timeline) lastTakenBy(at time.Time) uint64 {
	next := t.final + 1
	for seq, d := range t.first {
		if seq <= t.final && d.TS.After(at) && seq < next {
			next = seq
		}
	}
	return next - 1
}

// Window is a span of time whose readings are left out of steady-state
// latency (a fault and its recovery).
type Window struct{ From, To time.Time }

// Latencies returns, for the first copy of each seq, receive time minus the
// reading's ts, sorted ascending. Readings taken inside any of skip are
// left out.
func (t *Timeline) Latencies(skip ...Window) []time.Duration {
	out := make([]time.Duration, 0, len(t.first))
next:
	for _, d := range t.first {
		for _, w := range skip {
			if !d.TS.Before(w.From) && !d.TS.After(w.To) {
				continue next
			}
		}
		out = append(out, d.Recv.Sub(d.TS))
	}
	slices.Sort(out)
	return out
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value such that at least p% of values
// are <= it. It returns 0 for an empty slice.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
