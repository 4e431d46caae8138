package mqttpub_test

import (
	"context"
	"strings"
	"sync"

	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// failingQueue is the real buffer whose Delete fails (ENOSPC, as on a full
// SD card) while failing is set.
type failingQueue struct {
	*buffer.Buffer
	failing  atomic.Bool
	failures atomic.Int64
}

func (q *failingQueue) Delete(ctx context.Context, seqs ...uint64) error {
	if q.failing.Load() {
		q.failures.Add(1)
		return &errnoErr{syscall.ENOSPC}
	}
	return q.Buffer.Delete(ctx, seqs...)
}

type errnoErr struct{ e syscall.Errno }

func (e *errnoErr) Error() string { return "write buffer.db.wal: " + e.e.Error() }
func (e *errnoErr) Unwrap() error { return e.e }

// TestDeleteFailureEndsSessionAndRetries reproduces issue 11 item 1: after
// a failed buffer delete the publisher used to stop acknowledging and hang
// for good while still "connected". A failed delete must end the session,
// the readings must be sent again and deleted once the disk recovers, and
// nothing may be lost.
func TestDeleteFailureEndsSessionAndRetries(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	q := &failingQueue{Buffer: openBuffer(t)}
	f := countFrom(t, cnt, q.Buffer)
	appendN(t, q.Buffer, 3000)
	q.failing.Store(true)
	var logs testkit.LogBuffer
	r := start(t, q, mqttpub.Options{URL: br.URL(), Window: 500, Logger: logs.Logger()})

	cnt.WaitUnique(t, device, 100, 20*time.Second) // published, but none can be deleted
	for deadline := time.Now().Add(10 * time.Second); q.failures.Load() < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d failed deletes in 10s; want the publisher to keep retrying", q.failures.Load())
		}
	}
	if st, _ := q.Stats(); st.Count != 3000 {
		t.Fatalf("buffer holds %d readings while deletes fail, want 3000", st.Count)
	}
	q.failing.Store(false) // space is back
	appendN(t, q.Buffer, 500)
	cnt.WaitAll(t, device, f+3500, 20*time.Second)
	waitEmpty(t, q.Buffer, 20*time.Second)

	select {
	case err := <-r.done:
		t.Fatalf("Run returned %v after failed deletes; it must retry", err)
	default:
	}
	if rep := cnt.Report(device); rep.MissingCount != 0 || len(rep.Bad) != 0 {
		t.Fatalf("report %+v", rep)
	}
	out := logs.String()
	if !strings.Contains(out, "buffer delete failed") || !strings.Contains(out, "no space left on device") {
		t.Errorf("no log line with the delete error:\n%s", out)
	}
	if got := r.pub.Get(); got < 3500 {
		t.Errorf("published metric = %v, want >= 3500", got)
	}
}

// stuckQueue is the real buffer whose Delete blocks, as a deadlock would,
// until released.
type stuckQueue struct {
	*buffer.Buffer
	stuck   atomic.Bool
	release chan struct{}
	once    sync.Once
	entered chan struct{}
}

func (q *stuckQueue) Delete(ctx context.Context, seqs ...uint64) error {
	if q.stuck.Load() {
		q.once.Do(func() { close(q.entered) })
		<-q.release
	}
	return q.Buffer.Delete(ctx, seqs...)
}

// TestStalledPublisherIsReported: a publisher that has work and a
// connection but makes no progress (here its delete never returns) says
// so through Stalled, so readiness and the watchdog can act; a healthy or
// merely disconnected publisher does not.
func TestStalledPublisherIsReported(t *testing.T) {
	br := broker.New(t, broker.Options{})
	q := &stuckQueue{Buffer: openBuffer(t), release: make(chan struct{}), entered: make(chan struct{})}
	appendN(t, q.Buffer, 1000)
	r := start(t, q, mqttpub.Options{URL: br.URL(), Window: 200, StallTimeout: 500 * time.Millisecond})
	waitEmpty(t, q.Buffer, 20*time.Second)
	time.Sleep(time.Second) // idle, connected, nothing to do: not stalled
	if err := r.p.Stalled(); err != nil {
		t.Fatalf("Stalled() = %v on an idle publisher", err)
	}
	br.Stop() // disconnected with work: not stalled either (a network outage)
	appendN(t, q.Buffer, 100)
	time.Sleep(1500 * time.Millisecond)
	if err := r.p.Stalled(); err != nil {
		t.Fatalf("Stalled() = %v during a broker outage", err)
	}
	q.stuck.Store(true)
	if err := br.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Delete never called after the broker came back")
	}
	appendN(t, q.Buffer, 1000)
	deadline := time.Now().Add(5 * time.Second)
	for r.p.Stalled() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Stalled() = nil 5s after the delete got stuck")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("stalled: %v", r.p.Stalled())
	close(q.release)
	deadline = time.Now().Add(10 * time.Second)
	for r.p.Stalled() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("still stalled 10s after the delete returned: %v", r.p.Stalled())
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitEmpty(t, q.Buffer, 20*time.Second)
}
