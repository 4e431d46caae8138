package mqttpub

import (
	"slices"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/confirm"
)

// t0 is the fake clock's start; tests pass times explicitly.
var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func recs(from, to uint64) []buffer.Record {
	var out []buffer.Record
	for s := from; s <= to; s++ {
		out = append(out, buffer.Record{Seq: s, Sensor: "sim-1"})
	}
	return out
}

func seqsOf(rs []buffer.Record) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func msg(ranges ...[2]uint64) *confirm.Message {
	m := &confirm.Message{ForwarderID: "fwd-test"}
	for _, r := range ranges {
		m.Seqs = append(m.Seqs, confirm.Range{First: r[0], Last: r[1]})
	}
	return m
}

func kafkaLedger(max int) *ledger {
	return newLedger(ledgerOptions{kafka: true, maxUnconfirmed: max, confirmTimeout: time.Minute, maxInterval: 10 * time.Minute})
}

// TestLedgerCap: at max_unconfirmed nothing new is admitted and the cursor
// stops before the refused reading; a confirmation frees exactly its room,
// and the deleted readings count against the cap until the delete ends.
func TestLedgerCap(t *testing.T) {
	l := kafkaLedger(5)
	send, cursor, atCap := l.admit(recs(1, 10), t0)
	if got := seqsOf(send); !slices.Equal(got, span(1, 5)) || cursor != 5 || !atCap {
		t.Fatalf("admit 1..10 with cap 5 = %v, cursor %d, atCap %v; want 1..5, 5, true", got, cursor, atCap)
	}
	if l.capWait() == nil {
		t.Fatal("capWait = nil at the cap")
	}
	l.acked(span(1, 5))
	if n, _ := l.confirm(msg([2]uint64{1, 2}), t0.Add(time.Second)); n != 2 {
		t.Fatalf("confirm 1..2 deleted %d, want 2", n)
	}
	// Confirmed but not yet deleted: still no room.
	if send, _, atCap := l.admit(recs(6, 10), t0); len(send) != 0 || !atCap {
		t.Fatalf("admit while the confirmed wait for their delete = %v", seqsOf(send))
	}
	if got := l.take(100); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("deleter took %v, want [1 2]", got)
	}
	l.deleted([]uint64{1, 2})
	send, cursor, atCap = l.admit(recs(6, 10), t0)
	if got := seqsOf(send); !slices.Equal(got, []uint64{6, 7}) || cursor != 7 || !atCap {
		t.Fatalf("admit after 2 deleted = %v cursor %d atCap %v; want [6 7] 7 true", got, cursor, atCap)
	}
	// A new session re-scans from 0 (1 and 2 are gone from the buffer):
	// what the ledger holds is skipped.
	if send, cursor, _ := l.admit(recs(3, 7), t0); len(send) != 0 || cursor != 7 {
		t.Fatalf("re-scan admitted %v (cursor %d); want nothing, cursor 7", seqsOf(send), cursor)
	}
	if st := l.stats(); st.unconfirmed != 5 || st.deleting != 0 || !st.oldest.Equal(t0) {
		t.Fatalf("stats %+v", st)
	}
}

// TestLedgerSessionEnd: readings in flight without a PUBACK count as never
// sent after the session ends; PUBACKed ones stay unconfirmed.
func TestLedgerSessionEnd(t *testing.T) {
	l := kafkaLedger(100)
	l.admit(recs(1, 10), t0)
	l.acked(span(1, 6))
	l.sessionEnded()
	if n := l.unconfirmedN(); n != 6 {
		t.Fatalf("unconfirmed after session end = %d, want 6", n)
	}
	send, _, _ := l.admit(recs(1, 10), t0.Add(time.Second))
	if got := seqsOf(send); !slices.Equal(got, span(7, 10)) {
		t.Fatalf("next session sends %v, want 7..10", got)
	}
}

// TestLedgerResendRoundsAndBackoff drives the re-send timer with a fake
// clock: a reading unconfirmed for confirm_timeout is due; while nothing at
// all is confirmed the rounds come at 1, 2, 4, 8 ... times the timeout, up
// to the cap; one confirmation brings the interval back to the timeout.
func TestLedgerResendRoundsAndBackoff(t *testing.T) {
	l := kafkaLedger(100)
	l.admit(recs(1, 3), t0)
	next, sched := l.schedule()
	if !next.IsZero() {
		t.Fatalf("a round is due at %v before any PUBACK", next)
	}
	l.acked(span(1, 3))
	select {
	case <-sched: // a sender idle since before the PUBACK wakes up
	default:
		t.Fatal("the first PUBACK did not wake a waiting sender")
	}
	if n, _ := l.confirm(msg([2]uint64{2, 2}), t0.Add(time.Second)); n != 1 {
		t.Fatal("confirm 2 failed")
	}
	if next := l.next(); !next.Equal(t0.Add(time.Minute)) {
		t.Fatalf("next round at %v, want t0+1m", next.Sub(t0))
	}
	if n := l.round(t0.Add(59 * time.Second)); n != 0 {
		t.Fatalf("round before the timeout made %d due", n)
	}
	if n := l.round(t0.Add(time.Minute)); n != 2 {
		t.Fatalf("round at the timeout made %d due, want 2 (seqs 1 and 3)", n)
	}
	// The sender peeks from just before the first due reading.
	if first := l.firstDue(); first != 1 {
		t.Fatalf("firstDue = %d", first)
	}
	send := l.admitDue(recs(1, 3), 500, t0.Add(time.Minute))
	if got := seqsOf(send); !slices.Equal(got, []uint64{1, 3}) {
		t.Fatalf("re-sent %v, want [1 3]", got)
	}
	if l.firstDue() != 0 {
		t.Fatal("due readings left after the re-send")
	}
	// A confirmation came since the previous round, so the interval stays 1m.
	if next := l.next(); !next.Equal(t0.Add(2 * time.Minute)) {
		t.Fatalf("next round at %v, want t0+2m", next.Sub(t0))
	}
	// From now on nothing is confirmed (Kafka is down): each round re-sends
	// 1 and 3 and the gap doubles, capped at 10m.
	at := t0.Add(time.Minute)
	var gaps []time.Duration
	for range 7 {
		l.acked([]uint64{1, 3}) // their re-sends were PUBACKed
		next := l.next()
		if n := l.round(next.Add(-time.Millisecond)); n != 0 {
			t.Fatalf("round before %v made %d due", next.Sub(t0), n)
		}
		if n := l.round(next); n != 2 {
			t.Fatalf("round at %v made %d due, want 2", next.Sub(t0), n)
		}
		gaps = append(gaps, next.Sub(at))
		at = next
		l.admitDue(recs(1, 3), 500, at)
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	if !slices.Equal(gaps, want) {
		t.Fatalf("gaps between rounds %v, want %v", gaps, want)
	}
	// Kafka is back: a confirmation resets the interval and pulls the next
	// round in.
	l.acked([]uint64{1, 3})
	if n, _ := l.confirm(msg([2]uint64{1, 1}), at.Add(time.Second)); n != 1 {
		t.Fatal("confirm 1 failed")
	}
	if next := l.next(); !next.Equal(at.Add(time.Second + time.Minute)) {
		t.Fatalf("after a confirmation the next round is %v after the last, want 1m1s", l.next().Sub(at))
	}
}

// TestLedgerConfirmJunk: confirmations for seqs never sent are counted and
// ignored; seqs confirmed twice, seqs of an earlier run and seqs being
// deleted change nothing; a confirmation for a reading in flight deletes
// it and its late PUBACK is ignored.
func TestLedgerConfirmJunk(t *testing.T) {
	l := newLedger(ledgerOptions{kafka: true, maxUnconfirmed: 100, confirmTimeout: time.Minute, priorSeq: 50})
	l.admit(recs(51, 60), t0)
	l.acked(span(51, 55))
	for _, tc := range []struct {
		name      string
		m         *confirm.Message
		confirmed int
		unsent    uint64
	}{
		{"an earlier run's seqs", msg([2]uint64{1, 50}), 0, 0},
		{"never sent", msg([2]uint64{61, 70}), 0, 10},
		{"straddling the end", msg([2]uint64{59, 63}), 2, 3},
		{"in flight", msg([2]uint64{56, 56}), 1, 0},
		{"twice", msg([2]uint64{56, 56}), 0, 0},
		{"huge range, few held", msg([2]uint64{1, 1 << 40}), 7, 1<<40 - 60},
	} {
		n, unsent := l.confirm(tc.m, t0)
		if n != tc.confirmed || unsent != tc.unsent {
			t.Errorf("%s: confirmed %d, unsent %d; want %d, %d", tc.name, n, unsent, tc.confirmed, tc.unsent)
		}
	}
	l.acked([]uint64{56}) // the late PUBACK of a confirmed reading
	if st := l.stats(); st.unconfirmed != 0 || st.deleting != 10 {
		t.Fatalf("stats %+v; want 0 unconfirmed, 10 deleting", st)
	}
}

// TestLedgerDroppedReadingsAreForgotten: due readings the buffer dropped
// (max_bytes, max_age) do not hold room for ever.
func TestLedgerDroppedReadingsAreForgotten(t *testing.T) {
	l := kafkaLedger(10)
	l.admit(recs(1, 10), t0)
	l.acked(span(1, 10))
	if n := l.round(t0.Add(time.Minute)); n != 10 {
		t.Fatalf("round made %d due", n)
	}
	// The buffer dropped 1..4 and 9..10: a peek from 0 returns 5..8.
	send := l.admitDue(recs(5, 8), 500, t0.Add(time.Minute))
	if got := seqsOf(send); !slices.Equal(got, span(5, 8)) {
		t.Fatalf("re-sent %v, want 5..8", got)
	}
	if n := l.unconfirmedN(); n != 4 {
		t.Fatalf("unconfirmed = %d, want 4 (the dropped ones forgotten)", n)
	}
	if send, _, atCap := l.admit(recs(11, 20), t0); len(send) != 6 || !atCap {
		t.Fatalf("admitted %v after the drop, want 6 new readings", seqsOf(send))
	}
}

// TestLedgerBrokerMode: PUBACK means delivered; there is no cap and no
// re-send round.
func TestLedgerBrokerMode(t *testing.T) {
	l := newLedger(ledgerOptions{confirmTimeout: time.Minute})
	send, cursor, atCap := l.admit(recs(1, 20000), t0)
	if len(send) != 20000 || cursor != 20000 || atCap {
		t.Fatalf("broker mode admitted %d, cursor %d, atCap %v", len(send), cursor, atCap)
	}
	l.acked(span(1, 3))
	if got := l.take(10); !slices.Equal(got, span(1, 3)) {
		t.Fatalf("deleter got %v", got)
	}
	if send, _, _ := l.admit(recs(1, 4), t0); !slices.Equal(seqsOf(send), []uint64{4}) {
		t.Fatalf("readings being deleted were admitted again: %v", seqsOf(send))
	}
	if n := l.round(t0.Add(time.Hour)); n != 0 || !l.next().IsZero() {
		t.Fatal("broker mode has re-send rounds")
	}
}

// TestConfirmLatencyObserved: the latency runs from the first publish,
// not from the latest re-send.
func TestConfirmLatencyObserved(t *testing.T) {
	var obs observed
	l := newLedger(ledgerOptions{kafka: true, maxUnconfirmed: 10, confirmTimeout: time.Minute, latency: &obs})
	l.admit(recs(1, 1), t0)
	l.acked([]uint64{1})
	l.round(t0.Add(time.Minute))
	l.admitDue(recs(1, 1), 500, t0.Add(time.Minute))
	l.acked([]uint64{1})
	l.confirm(msg([2]uint64{1, 1}), t0.Add(65*time.Second))
	if !slices.Equal(obs, []float64{65}) {
		t.Fatalf("observed %v, want [65]", obs)
	}
}

type observed []float64

func (o *observed) Update(v float64) { *o = append(*o, v) }

// ledgerEntries is what the ledger holds per reading: the map, the fifo
// (stale items included), the due list and the delete queue.
func ledgerEntries(l *ledger) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seqs) + len(l.fifo) + len(l.due) + len(l.queue)
}

// TestLedgerBoundedUnderFastDrain: draining at 30,000 readings/s with
// prompt confirmations, the ledger stays within a few times max_unconfirmed
// for the whole confirm_timeout, instead of keeping every seq sent since
// the last re-send round (1.77 million entries after 59 s before the fix).
// The confirmations leave a hole (one reading of each batch unconfirmed
// until the round), so the fifo also holds live items among stale ones.
func TestLedgerBoundedUnderFastDrain(t *testing.T) {
	const (
		maxUnconfirmed = 10_000
		batch          = 500
		rate           = 30_000 // readings/s
		readings       = 59 * rate
	)
	l := kafkaLedger(maxUnconfirmed)
	step := time.Second * batch / rate
	now := t0
	peak, unconfirmed := 0, 0
	for next := uint64(1); next <= readings; now = now.Add(step) {
		send, _, _ := l.admit(recs(next, next+batch-1), now)
		seqs := seqsOf(send)
		l.acked(seqs)
		hole := seqs[len(seqs)/2]
		l.confirm(msg([2]uint64{seqs[0], hole - 1}, [2]uint64{hole + 1, seqs[len(seqs)-1]}), now)
		l.deleted(l.take(len(seqs)))
		next += uint64(len(send))
		unconfirmed++
		if unconfirmed == maxUnconfirmed/2 {
			// The holes, confirmed late, as by a slow forwarder replica.
			var held []uint64
			for s, e := range l.seqs {
				if e.state == stSent {
					held = append(held, s)
				}
			}
			for _, s := range held {
				l.confirm(msg([2]uint64{s, s}), now)
			}
			l.deleted(l.take(len(held)))
			unconfirmed = 0
		}
		peak = max(peak, ledgerEntries(l))
	}
	if limit := 4*maxUnconfirmed + 2*compactMin; peak > limit {
		t.Fatalf("ledger peaked at %d entries draining %d readings in 59s; want at most %d (max_unconfirmed %d)",
			peak, readings, limit, maxUnconfirmed)
	}
	// Nothing was lost on the way: the holes still unconfirmed are due at
	// the round, and only they.
	if n := l.round(t0.Add(2 * time.Minute)); n != unconfirmed {
		t.Fatalf("round made %d due, want the %d unconfirmed", n, unconfirmed)
	}
}

// BenchmarkLedgerKafkaDrain is the ledger alone at the fastest drain it
// allows: per op one reading admitted, PUBACKed, confirmed (in batches of
// 500, prompt, as the forwarder does under load) and deleted, with the
// default max_unconfirmed and confirm_timeout, the clock moving 1µs per
// reading. It reports the peak of the ledger's entries (map, fifo, due
// list, delete queue), which must not grow with b.N.
func BenchmarkLedgerKafkaDrain(b *testing.B) {
	const batch = 500
	l := newLedger(ledgerOptions{kafka: true, maxUnconfirmed: 10_000, confirmTimeout: time.Minute, maxInterval: 10 * time.Minute})
	rs := recs(1, batch)
	seqs := make([]uint64, batch)
	m := msg([2]uint64{1, batch})
	now := t0
	next, peak := uint64(1), 0
	b.ReportAllocs()
	for i := 0; i < b.N; i += batch {
		for j := range rs {
			rs[j].Seq = next + uint64(j)
			seqs[j] = rs[j].Seq
		}
		send, _, _ := l.admit(rs, now)
		if len(send) != batch {
			b.Fatalf("admitted %d of %d", len(send), batch)
		}
		l.acked(seqs)
		m.Seqs[0] = confirm.Range{First: next, Last: next + batch - 1}
		l.confirm(m, now)
		l.deleted(l.take(batch))
		next += batch
		now = now.Add(batch * time.Microsecond)
		peak = max(peak, ledgerEntries(l))
	}
	b.ReportMetric(float64(peak), "peak-entries")
}
