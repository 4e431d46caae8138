package mqttpub

import (
	"sync"

	"github.com/edgepipe/sensorpipe/buffer"
)

// seqState is where a reading the publisher has handed on stands.
type seqState uint8

const (
	// stDeleting: delivered (PUBACKed); its delete is queued or running.
	stDeleting seqState = iota + 1
)

// ledger records the readings the publisher has handed on but that are
// still in the buffer, so that a new session does not send again what is
// being deleted, and the deleter knows what to delete. It outlives
// sessions. Safe for concurrent use.
type ledger struct {
	mu    sync.Mutex
	seqs  map[uint64]seqState
	queue []uint64 // delivered seqs the deleter has not taken yet
	// deleting counts seqs in stDeleting, queued or being deleted.
	deleting int
	work     chan struct{} // 1-buffered: the deleter has something to do
	freed    chan struct{} // closed and replaced when a delete ends
}

func newLedger() *ledger {
	return &ledger{seqs: map[uint64]seqState{}, work: make(chan struct{}, 1), freed: make(chan struct{})}
}

// delivered queues seqs for deletion.
func (l *ledger) delivered(seqs []uint64) {
	l.mu.Lock()
	for _, s := range seqs {
		if l.seqs[s] == stDeleting {
			continue
		}
		l.seqs[s] = stDeleting
		l.deleting++
		l.queue = append(l.queue, s)
	}
	l.mu.Unlock()
	select {
	case l.work <- struct{}{}:
	default:
	}
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
	for _, s := range seqs {
		if l.seqs[s] == stDeleting {
			delete(l.seqs, s)
			l.deleting--
		}
	}
	close(l.freed)
	l.freed = make(chan struct{})
	l.mu.Unlock()
}

// backlog returns how many seqs wait for the deleter and a channel closed
// when the next delete ends.
func (l *ledger) backlog() (int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue), l.freed
}

// deletingN is how many delivered readings are not deleted yet.
func (l *ledger) deletingN() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deleting
}

// admit returns the records of recs the sender should publish: those the
// ledger does not hold already.
func (l *ledger) admit(recs []buffer.Record) []buffer.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seqs) == 0 {
		return recs
	}
	out := recs[:0:0]
	for _, r := range recs {
		if _, held := l.seqs[r.Seq]; !held {
			out = append(out, r)
		}
	}
	return out
}
