package mqttpub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// errQueue marks errors from the Queue, which end Run (the buffer is gone).
var errQueue = errors.New("buffer")

type pending struct {
	seq  uint64
	tok  mqtt.Token
	sent time.Time
}

// run publishes "online", then drains the queue until the connection is
// lost (error) or ctx is cancelled (nil, after waiting for in-flight acks).
func (s *session) run(ctx context.Context) error {
	p := s.p
	connCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case err := <-s.lost:
			cancel(fmt.Errorf("%w: %w", ErrConnectionLost, err))
		case <-connCtx.Done():
		}
	}()

	online := s.c.Publish(p.statusTop, 1, true, "online")
	select {
	case <-online.Done():
		if err := online.Error(); err != nil {
			return fmt.Errorf("publish online status: %w", err)
		}
	case <-connCtx.Done():
		return s.cause(connCtx)
	case <-time.After(p.o.AckTimeout):
		s.closeConn()
		return fmt.Errorf("publish online status: %w", ErrAckTimeout)
	}

	inflight := make(chan pending, p.o.Window)
	abort := make(chan struct{})
	ackErr := make(chan error, 1)
	go func() { ackErr <- s.acker(inflight, abort) }()

	sendErr := s.sender(connCtx, inflight)
	close(inflight)
	if ctx.Err() != nil && context.Cause(connCtx) == ctx.Err() {
		// Shutdown: give in-flight publishes a moment to be acknowledged
		// so they are not sent again after the restart.
		var timedOut atomic.Bool
		t := time.AfterFunc(p.o.FlushTimeout, func() { timedOut.Store(true); close(abort) })
		err := <-ackErr
		t.Stop()
		if errors.Is(err, errQueue) {
			return err
		}
		if timedOut.Load() {
			// The broker stopped answering: do not wait again to say
			// "offline"; the will says it when the broker gives up on us.
			s.dead = true
		}
		return nil
	}
	close(abort)
	err := <-ackErr
	if sendErr != nil && !errors.Is(sendErr, context.Canceled) {
		return sendErr
	}
	if errors.Is(err, errQueue) {
		return err
	}
	if c := s.cause(connCtx); c != nil {
		return c
	}
	return err
}

func (s *session) cause(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// sender peeks past everything in flight and publishes, blocking while the
// window is full.
func (s *session) sender(ctx context.Context, inflight chan<- pending) error {
	p := s.p
	var after uint64
	for ctx.Err() == nil {
		n := min(p.o.Batch, cap(inflight)-len(inflight))
		n = max(n, 1)
		recs, err := p.q.Peek(after, n)
		if err != nil {
			return fmt.Errorf("%w: peek: %w", errQueue, err)
		}
		if len(recs) == 0 {
			if err := p.q.Wait(ctx, after); err != nil && ctx.Err() == nil {
				return fmt.Errorf("%w: wait: %w", errQueue, err)
			}
			continue
		}
		for _, r := range recs {
			tok := s.c.Publish(p.topic(r.Sensor), 1, false, r.Payload)
			select {
			case inflight <- pending{seq: r.Seq, tok: tok, sent: time.Now()}:
			case <-ctx.Done():
				return ctx.Err()
			}
			after = r.Seq
		}
	}
	return ctx.Err()
}

func (p *Publisher) topic(sensor string) string {
	t, ok := p.topics[sensor]
	if !ok {
		t = p.o.TopicPrefix + "/" + p.o.DeviceID + "/" + sensor + "/reading"
		p.topics[sensor] = t
	}
	return t
}

// acker waits for PUBACKs in publish order and hands acknowledged seqs
// to a deleter in batches. It flushes before it blocks, so a record is
// deleted soon after its PUBACK even when the next one is slow; and it does
// not wait for the delete's fsync, so PUBACKs keep freeing the window while
// the buffer commits (the next batch grows meanwhile).
func (s *session) acker(inflight <-chan pending, abort <-chan struct{}) (err error) {
	p := s.p
	d := s.startDeleter()
	defer func() {
		if derr := d.stop(); derr != nil && err == nil {
			err = derr
		}
	}()
	batch := make([]uint64, 0, 256)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := d.send(batch); err != nil {
			return err
		}
		batch = make([]uint64, 0, 256)
		return nil
	}
	stall := time.NewTimer(time.Hour)
	defer stall.Stop()
	for {
		var e pending
		var ok bool
		select {
		case e, ok = <-inflight:
		default:
			if err := flush(); err != nil {
				return err
			}
			select {
			case e, ok = <-inflight:
			case <-abort:
				return flush()
			}
		}
		if !ok {
			return flush()
		}
		select {
		case <-e.tok.Done():
		default:
			if err := flush(); err != nil {
				return err
			}
			stall.Reset(time.Until(e.sent.Add(p.o.AckTimeout)))
			select {
			case <-e.tok.Done():
			case <-abort:
				return flush()
			case <-stall.C:
				p.log.Warn("no PUBACK in time; dropping the connection", "seq", e.seq, "waited", time.Since(e.sent).Round(time.Millisecond).String())
				s.closeConn()
				return ErrAckTimeout
			}
		}
		if err := e.tok.Error(); err != nil {
			if ferr := flush(); ferr != nil {
				return ferr
			}
			return fmt.Errorf("publish seq %d: %w", e.seq, err)
		}
		if o := p.o.Metrics.Latency; o != nil {
			o.Observe(time.Since(e.sent).Seconds())
		}
		batch = append(batch, e.seq)
		if len(batch) >= maxDeleteBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// maxDeleteBatch bounds how many acknowledged readings wait for one
// delete while PUBACKs stream in without a pause (they would be sent again
// after a crash).
const maxDeleteBatch = 1000

// deleter deletes acknowledged seqs from the queue, one batch at a time, in
// its own goroutine.
type deleter struct {
	ch   chan []uint64
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func (s *session) startDeleter() *deleter {
	p := s.p
	d := &deleter{ch: make(chan []uint64, 4), done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for seqs := range d.ch {
			if d.failed() != nil {
				continue // drain; the acker stops at its next send
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := p.q.Delete(ctx, seqs...)
			cancel()
			if err != nil {
				d.mu.Lock()
				d.err = fmt.Errorf("%w: delete: %w", errQueue, err)
				d.mu.Unlock()
				continue
			}
			if c := p.o.Metrics.Published; c != nil {
				c.Add(float64(len(seqs)))
			}
		}
	}()
	return d
}

func (d *deleter) failed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// send queues a batch; it blocks while four batches are pending.
func (d *deleter) send(seqs []uint64) error {
	if err := d.failed(); err != nil {
		return err
	}
	d.ch <- seqs
	return nil
}

// stop waits until every queued batch is deleted.
func (d *deleter) stop() error {
	close(d.ch)
	<-d.done
	return d.failed()
}
