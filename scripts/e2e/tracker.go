package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/e2e/internal/topicread"
)

// recKey names one Kafka record.
type recKey struct {
	partition int32
	offset    int64
}

// tracker follows the topic live: it remembers when each record arrived
// (for latency and recovery times) and how far the contiguous run of seqs
// floor+1..prefix has got (to know when the pipeline has caught up). The
// agent's seqs start above its buffer's floor (setFloor), not at 1.
type tracker struct {
	device string

	mu       sync.Mutex
	recv     map[recKey]time.Time
	ts       map[uint64]time.Time // reading ts of each seq seen
	floor    uint64               // the agent's first seq is floor+1
	prefix   uint64               // every seq in floor+1..prefix has been seen (or forgiven)
	maxSeq   uint64
	forgiven map[uint64]bool // gaps given up on, so later faults can still be gated
	records  int
	byFwd    map[string]int // records of the device per forwarder_id header
	foreign  int            // records of another device or that did not decode
	progress chan struct{}  // closed and replaced when prefix moves
}

func newTracker(device string) *tracker {
	return &tracker{device: device, recv: map[recKey]time.Time{}, ts: map[uint64]time.Time{},
		forgiven: map[uint64]bool{}, byFwd: map[string]int{}, progress: make(chan struct{})}
}

func (t *tracker) add(r topicread.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.records++
	t.recv[recKey{r.Partition, r.Offset}] = r.Recv
	if r.Err != nil || r.Reading.DeviceID != t.device {
		t.foreign++
		return
	}
	t.byFwd[r.Headers["forwarder_id"]]++
	if _, ok := t.ts[r.Reading.Seq]; !ok {
		t.ts[r.Reading.Seq] = r.Reading.TS
	}
	t.maxSeq = max(t.maxSeq, r.Reading.Seq)
	t.advance()
}

// setFloor tells the tracker where the agent's seqs start.
func (t *tracker) setFloor(floor uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.floor = floor
	t.prefix = max(t.prefix, floor)
	t.advance()
}

func (t *tracker) advance() {
	moved := false
	for {
		if _, ok := t.ts[t.prefix+1]; !ok && !t.forgiven[t.prefix+1] {
			break
		}
		t.prefix++
		moved = true
	}
	if moved {
		close(t.progress)
		t.progress = make(chan struct{})
	}
}

// forgive gives up on the seqs missing below the newest one seen, so the
// next fault can still be gated on catching up. The final count, not the
// tracker, decides what was lost.
func (t *tracker) forgive() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for s := t.prefix + 1; s <= t.maxSeq; s++ {
		if _, ok := t.ts[s]; !ok {
			t.forgiven[s] = true
		}
	}
	t.advance()
}

// state returns the contiguous prefix, its reading's ts, and a channel
// closed on the next progress.
func (t *tracker) state() (uint64, time.Time, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.prefix
	for s > t.floor && t.forgiven[s] {
		s--
	}
	return t.prefix, t.ts[s], t.progress
}

// fwdRecords is how many records of the device forwarder id has written so far.
func (t *tracker) fwdRecords(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byFwd[id]
}

// received returns when the live consumer got record k.
func (t *tracker) received(k recKey) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.recv[k]
	return v, ok
}

// waitUntil waits until cond(prefix, prefixTS) holds, up to d.
func (t *tracker) waitUntil(ctx context.Context, d time.Duration, what string, cond func(uint64, time.Time) bool) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		p, ts, ch := t.state()
		if cond(p, ts) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("%s: not reached within %v (every seq up to %d is in Kafka; that reading was taken at %s)",
				what, d, p, ts.Format(time.RFC3339Nano))
		}
	}
}

// waitCaughtUp waits until every reading taken up to end is in Kafka: the
// contiguous prefix reaches a reading taken after end.
func (t *tracker) waitCaughtUp(ctx context.Context, end time.Time, d time.Duration) error {
	return t.waitUntil(ctx, d, "catch up", func(_ uint64, ts time.Time) bool { return ts.After(end) })
}

// waitSeq waits until every seq in floor+1..seq is in Kafka.
func (t *tracker) waitSeq(ctx context.Context, seq uint64, d time.Duration) error {
	t.mu.Lock()
	from := t.floor + 1
	t.mu.Unlock()
	return t.waitUntil(ctx, d, fmt.Sprintf("deliver seqs %d..%d", from, seq), func(p uint64, _ time.Time) bool { return p >= seq })
}
