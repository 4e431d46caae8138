package mqttpub

import (
	"slices"
	"sync"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/confirm"
)

// seqState is where a reading the publisher has handed on stands.
type seqState uint8

const (
	// stInflight (kafka): published in this session, no PUBACK handled yet.
	stInflight seqState = iota + 1
	// stSent (kafka): PUBACKed; waiting for the forwarder's confirmation.
	stSent
	// stDue (kafka): unconfirmed past the confirm timeout; to be sent again.
	stDue
	// stDeleting: delivered (PUBACKed in broker mode, confirmed in kafka
	// mode); its delete is queued or running.
	stDeleting
)

type entry struct {
	state seqState
	first int64 // unix ns of this process's first publish (kafka)
	sent  int64 // unix ns of the latest publish (kafka)
}

// fifoItem is a sent reading in order of publish time; an item is stale
// when its entry has gone or was sent again since.
type fifoItem struct {
	seq  uint64
	sent int64
}

// compactMin is how many stale fifo items may pile up before the fifo is
// compacted, so a small window is not compacted on every confirmation.
const compactMin = 1024

// ledgerOptions configure a ledger; see Options for their meaning.
type ledgerOptions struct {
	kafka          bool
	maxUnconfirmed int
	confirmTimeout time.Duration
	maxInterval    time.Duration // cap of the re-send backoff
	priorSeq       uint64
	latency        observer // confirm latency; nil: none
}

// observer takes the confirm latencies (a *metrics.PrometheusHistogram).
type observer interface{ Update(seconds float64) }

// ledger records the readings the publisher has handed on but that are
// still in the buffer: in kafka mode those published and not yet confirmed
// (the unconfirmed window) and in both modes those being deleted. It
// decides what the sender publishes (new readings while there is room,
// readings due to be sent again; never what is held), schedules the
// re-send rounds, applies confirmations and feeds the deleter. It outlives
// sessions and is safe for concurrent use. Every method that depends on
// time takes it as an argument, so tests drive it with a fake clock.
type ledger struct {
	o ledgerOptions

	mu          sync.Mutex
	seqs        map[uint64]entry
	queue       []uint64 // delivered seqs the deleter has not taken yet
	deleting    int      // entries in stDeleting
	unconfirmed int      // entries in stInflight, stSent or stDue
	// fifo holds one item per stSent entry (its live items, nSent of
	// them) and stale ones: fifo[:head] consumed by a round, the rest
	// confirmed since. compact drops the stale ones once they outnumber
	// the live ones, so the fifo is bounded by max_unconfirmed, not by the
	// drain rate times confirm_timeout.
	fifo    []fifoItem
	head    int      // fifo[:head] is consumed
	nSent   int      // entries in stSent
	due     []uint64 // sorted stDue seqs the sender has not reached yet
	maxSent uint64   // highest seq published by this process

	interval  time.Duration // between re-send rounds; grows while nothing is confirmed
	nextRound time.Time     // zero: nothing sent is waiting
	confirmed bool          // something was confirmed since the last round
	lastConf  time.Time

	work    chan struct{} // 1-buffered: the deleter has something to do
	changed chan struct{} // closed and replaced when room frees up
	sched   chan struct{} // closed and replaced when nextRound comes earlier
}

func newLedger(o ledgerOptions) *ledger {
	return &ledger{
		o: o, seqs: map[uint64]entry{}, interval: o.confirmTimeout,
		work: make(chan struct{}, 1), changed: make(chan struct{}), sched: make(chan struct{}),
	}
}

// setNext moves the next re-send round; a waiting sender is woken when it
// comes earlier than what it waits for. l.mu is held.
func (l *ledger) setNext(t time.Time) {
	if !t.IsZero() && (l.nextRound.IsZero() || t.Before(l.nextRound)) {
		close(l.sched)
		l.sched = make(chan struct{})
	}
	l.nextRound = t
}

// signal wakes whoever waits for room; l.mu is held.
func (l *ledger) signal() {
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *ledger) wakeDeleter() {
	select {
	case l.work <- struct{}{}:
	default:
	}
}

// room is how many new readings may be published now; l.mu is held.
func (l *ledger) room() int {
	if !l.o.kafka {
		return int(^uint(0) >> 1)
	}
	return max(0, l.o.maxUnconfirmed-l.unconfirmed-l.deleting)
}

// admit takes records peeked after the sender's cursor, in seq order, and
// returns the new ones to publish while there is room; records the ledger
// holds (in flight, unconfirmed, due, being deleted) are skipped: due ones
// go through admitDue. cursor is the last seq the sender may move past;
// atCap reports that a new record was refused for want of room, so the
// sender should wait for confirmations.
func (l *ledger) admit(recs []buffer.Record, now time.Time) (send []buffer.Record, cursor uint64, atCap bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seqs) == 0 && !l.o.kafka {
		if n := len(recs); n > 0 {
			cursor = recs[n-1].Seq
		}
		return recs, cursor, false
	}
	ns := now.UnixNano()
	send = recs[:0:0]
	for _, r := range recs {
		if _, held := l.seqs[r.Seq]; !held {
			if l.o.kafka {
				if l.room() == 0 {
					return send, cursor, true
				}
				l.seqs[r.Seq] = entry{state: stInflight, first: ns, sent: ns}
				l.unconfirmed++
			}
			send = append(send, r)
			l.maxSent = max(l.maxSent, r.Seq)
		}
		cursor = r.Seq
	}
	return send, cursor, false
}

// firstDue is the oldest reading due to be sent again, or 0.
func (l *ledger) firstDue() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.due) == 0 {
		return 0
	}
	return l.due[0]
}

// admitDue takes up to n records peeked from just before firstDue and
// returns the due ones to publish again. Due readings the peek passed
// without seeing are gone from the buffer (dropped by max_bytes or
// max_age) and forgotten, as are those beyond a short peek's end.
func (l *ledger) admitDue(recs []buffer.Record, n int, now time.Time) []buffer.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	ns := now.UnixNano()
	var send []buffer.Record
	for _, r := range recs {
		l.dropDueBelow(r.Seq)
		if len(l.due) == 0 {
			break
		}
		if l.due[0] != r.Seq {
			continue
		}
		l.due = l.due[1:]
		if e := l.seqs[r.Seq]; e.state == stDue {
			e.state, e.sent = stInflight, ns
			l.seqs[r.Seq] = e
			send = append(send, r)
		}
	}
	if len(recs) < n && len(l.due) > 0 {
		l.dropDueBelow(l.due[len(l.due)-1] + 1) // the queue ends before them
	}
	l.signal()
	return send
}

// dropDueBelow forgets due readings below seq that a peek passed without
// seeing; l.mu is held.
func (l *ledger) dropDueBelow(seq uint64) {
	for len(l.due) > 0 && l.due[0] < seq {
		s := l.due[0]
		l.due = l.due[1:]
		if e, ok := l.seqs[s]; ok && e.state == stDue {
			delete(l.seqs, s)
			l.unconfirmed--
		}
	}
}

// acked records PUBACKs: in kafka mode the readings now wait for their
// confirmation; in broker mode they are delivered and go to the deleter.
func (l *ledger) acked(seqs []uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.o.kafka {
		l.deliverLocked(seqs)
		return
	}
	for _, s := range seqs {
		e, ok := l.seqs[s]
		if !ok || e.state != stInflight {
			continue // confirmed while in flight
		}
		e.state = stSent
		l.seqs[s] = e
		l.nSent++
		l.fifo = append(l.fifo, fifoItem{seq: s, sent: e.sent})
		if l.nextRound.IsZero() {
			l.setNext(time.Unix(0, e.sent).Add(l.o.confirmTimeout))
		}
	}
}

// deliverLocked queues seqs for deletion; l.mu is held.
func (l *ledger) deliverLocked(seqs []uint64) {
	for _, s := range seqs {
		if l.seqs[s].state == stDeleting {
			continue
		}
		l.seqs[s] = entry{state: stDeleting}
		l.deleting++
		l.queue = append(l.queue, s)
	}
	l.wakeDeleter()
}

// round makes the readings sent at least confirmTimeout ago and still
// unconfirmed due to be sent again, when a round is due, and returns how
// many it made due. Rounds come every confirmTimeout while confirmations
// arrive; while none do (Kafka or every forwarder down) the interval
// doubles up to maxInterval, so an outage does not flood the broker.
func (l *ledger) round(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nextRound.IsZero() || now.Before(l.nextRound) {
		return 0
	}
	limit := now.Add(-l.o.confirmTimeout).UnixNano()
	n := 0
	for ; l.head < len(l.fifo); l.head++ {
		it := l.fifo[l.head]
		e, ok := l.seqs[it.seq]
		if !ok || e.state != stSent || e.sent != it.sent {
			continue // confirmed, or sent again since
		}
		if it.sent > limit {
			break
		}
		e.state = stDue
		l.seqs[it.seq] = e
		l.nSent--
		l.due = append(l.due, it.seq)
		n++
	}
	l.compact()
	if n > 0 {
		slices.Sort(l.due)
		l.due = slices.Compact(l.due)
		if l.confirmed {
			l.interval = l.o.confirmTimeout
		} else {
			l.interval = min(2*l.interval, max(l.o.maxInterval, l.o.confirmTimeout))
		}
		l.confirmed = false
		l.setNext(now.Add(l.interval))
		l.signal()
		return n
	}
	if l.head < len(l.fifo) {
		l.setNext(time.Unix(0, l.fifo[l.head].sent).Add(l.o.confirmTimeout))
	} else {
		l.setNext(time.Time{})
	}
	return 0
}

// compact drops the fifo's stale items (consumed, or confirmed since they
// were sent) once they outnumber the live ones and compactMin, keeping the
// order; the backing array is given back when it is mostly empty. Each
// compaction at least halves the fifo, so its cost is spread over the
// confirmations that made the items stale. l.mu is held.
func (l *ledger) compact() {
	if stale := len(l.fifo) - l.nSent; stale <= l.nSent || stale < compactMin {
		return
	}
	live := l.fifo[:0]
	for _, it := range l.fifo[l.head:] {
		if e, ok := l.seqs[it.seq]; ok && e.state == stSent && e.sent == it.sent {
			live = append(live, it)
		}
	}
	if cap(live) > 4*max(len(live), compactMin) {
		live = slices.Clone(live)
	}
	l.fifo, l.head = live, 0
}

// next is when the next re-send round is due; zero when none is.
func (l *ledger) next() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextRound
}

// schedule is next, with a channel closed when the round comes earlier.
func (l *ledger) schedule() (time.Time, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextRound, l.sched
}

// confirm applies a confirmation: every unconfirmed reading it covers is
// delivered and goes to the deleter. It returns how many readings that
// was, and how many of the confirmed seqs this device never sent (above
// anything it published and above priorSeq): a bug or a spoofer.
// Seqs confirmed twice, or sent by an earlier run, are ignored.
func (l *ledger) confirm(m *confirm.Message, now time.Time) (confirmed int, unsent uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	limit := max(l.maxSent, l.o.priorSeq)
	var span uint64
	for _, r := range m.Seqs {
		if r.Last > limit {
			unsent += r.Last - max(r.First, limit+1) + 1
		}
		if r.First <= limit {
			span += min(r.Last, limit) - r.First + 1
		}
	}
	ns := now.UnixNano()
	if span <= 4*uint64(len(l.seqs)) {
		for _, r := range m.Seqs {
			for s := r.First; s <= min(r.Last, limit); s++ {
				confirmed += l.confirmOne(s, ns)
			}
		}
	} else {
		for s := range l.seqs {
			i, found := slices.BinarySearchFunc(m.Seqs, s, func(r confirm.Range, s uint64) int {
				switch {
				case r.Last < s:
					return -1
				case r.First > s:
					return 1
				}
				return 0
			})
			if found && m.Seqs[i].Contains(s) {
				confirmed += l.confirmOne(s, ns)
			}
		}
	}
	if confirmed > 0 {
		l.compact()
		l.confirmed, l.lastConf = true, now
		if l.interval > l.o.confirmTimeout {
			// Confirmations are back: stop backing off.
			l.interval = l.o.confirmTimeout
			if !l.nextRound.IsZero() && l.nextRound.After(now.Add(l.interval)) {
				l.setNext(now.Add(l.interval))
			}
		}
		l.wakeDeleter()
		l.signal()
	}
	return confirmed, unsent
}

// confirmOne delivers seq if it is unconfirmed; l.mu is held.
func (l *ledger) confirmOne(seq uint64, now int64) int {
	e, ok := l.seqs[seq]
	if !ok || e.state == stDeleting {
		return 0
	}
	if l.o.latency != nil {
		l.o.latency.Update(time.Duration(now - e.first).Seconds())
	}
	if e.state == stSent {
		l.nSent--
	}
	l.seqs[seq] = entry{state: stDeleting}
	l.unconfirmed--
	l.deleting++
	l.queue = append(l.queue, seq)
	return 1
}

// sessionEnded forgets the readings in flight without a PUBACK: they count
// as never sent, so the next session sends them again.
func (l *ledger) sessionEnded() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.o.kafka {
		return
	}
	for s, e := range l.seqs {
		if e.state == stInflight {
			delete(l.seqs, s)
			l.unconfirmed--
		}
	}
	l.signal()
}

// take hands the deleter up to n queued seqs.
func (l *ledger) take(n int) []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := min(n, len(l.queue))
	out := append([]uint64(nil), l.queue[:k]...)
	l.queue = l.queue[k:]
	if len(l.queue) == 0 {
		l.queue = nil // let the backing array go
	}
	return out
}

// deleted ends the deletion of seqs, whether it succeeded or not: after a
// failed delete the readings are still in the buffer and count as never
// sent, so the next session sends them again.
func (l *ledger) deleted(seqs []uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range seqs {
		if l.seqs[s].state == stDeleting {
			delete(l.seqs, s)
			l.deleting--
		}
	}
	l.signal()
}

// backlog returns how many seqs wait for the deleter and a channel closed
// when that may have changed.
func (l *ledger) backlog() (int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue), l.changed
}

// capWait returns nil when a new reading may be published now, else a
// channel closed when room may have freed up.
func (l *ledger) capWait() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.room() > 0 || len(l.due) > 0 {
		return nil
	}
	return l.changed
}

// unconfirmedN is how many readings wait for a confirmation.
func (l *ledger) unconfirmedN() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unconfirmed
}

// unconfirmedWait is unconfirmedN with a channel closed when it may have
// changed.
func (l *ledger) unconfirmedWait() (int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unconfirmed, l.changed
}

// deletingN is how many delivered readings are not deleted yet.
func (l *ledger) deletingN() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deleting
}

// ledgerStats is a snapshot for metrics and the status endpoint.
type ledgerStats struct {
	unconfirmed, deleting int
	oldest                time.Time // first publish of the oldest unconfirmed reading; zero if none
	lastConfirm           time.Time
	nextRound             time.Time
}

func (l *ledger) stats() ledgerStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := ledgerStats{unconfirmed: l.unconfirmed, deleting: l.deleting, lastConfirm: l.lastConf, nextRound: l.nextRound}
	if l.unconfirmed == 0 {
		return st
	}
	var oldest int64
	for _, e := range l.seqs {
		if e.state != stDeleting && (oldest == 0 || e.first < oldest) {
			oldest = e.first
		}
	}
	st.oldest = time.Unix(0, oldest)
	return st
}
