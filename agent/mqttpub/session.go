package mqttpub

import (
	"context"
	"errors"
	"fmt"
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
	p.sessMu.Lock()
	p.sessCancel = cancel
	p.sessMu.Unlock()
	defer func() {
		p.sessMu.Lock()
		p.sessCancel = nil
		p.sessMu.Unlock()
		p.prog.setSending(false)
		p.prog.inflight.Store(0) // what the acker dropped is sent again
	}()
	p.prog.touch()
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
	go func() {
		err := s.acker(inflight, abort)
		if err != nil {
			cancel(err) // the sender must not wait on a window nobody empties
		}
		ackErr <- err
	}()

	sendErr := s.sender(connCtx, inflight)
	close(inflight)
	if ctx.Err() != nil && context.Cause(connCtx) == ctx.Err() {
		// Shutdown: give in-flight publishes a moment to be acknowledged
		// so they are not sent again after the restart.
		var timedOut atomic.Bool
		t := time.AfterFunc(p.o.FlushTimeout, func() { timedOut.Store(true); close(abort) })
		<-ackErr
		t.Stop()
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
// window is full. Readings the ledger holds (delivered, being deleted) are
// skipped.
func (s *session) sender(ctx context.Context, inflight chan<- pending) error {
	p := s.p
	p.prog.setSending(true)
	var after uint64
	for ctx.Err() == nil {
		n := min(p.o.Batch, cap(inflight)-len(inflight))
		n = max(n, 1)
		recs, err := p.q.Peek(after, n)
		if err != nil {
			return fmt.Errorf("%w: peek: %w", errQueue, err)
		}
		if len(recs) == 0 {
			p.prog.setSending(false)
			err := p.q.Wait(ctx, after)
			p.prog.setSending(true)
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("%w: wait: %w", errQueue, err)
			}
			continue
		}
		after = recs[len(recs)-1].Seq
		for _, r := range p.led.admit(recs) {
			tok := s.c.Publish(p.topic(r.Sensor), 1, false, r.Payload)
			p.prog.inflight.Add(1)
			p.prog.touch()
			select {
			case inflight <- pending{seq: r.Seq, tok: tok, sent: time.Now()}:
			case <-ctx.Done():
				return ctx.Err()
			}
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

// acker waits for PUBACKs in publish order and hands acknowledged seqs to
// the deleter in batches. It flushes before it blocks, so a record is
// deleted soon after its PUBACK even when the next one is slow; and it does
// not wait for the delete's fsync, so PUBACKs keep freeing the window while
// the buffer commits, unless the deleter falls behind by maxQueuedDeletes.
func (s *session) acker(inflight <-chan pending, abort <-chan struct{}) error {
	p := s.p
	batch := make([]uint64, 0, 256)
	flush := func() {
		if len(batch) > 0 {
			p.delivered(batch)
			batch = batch[:0]
		}
	}
	defer flush()
	stall := time.NewTimer(time.Hour)
	defer stall.Stop()
	for {
		var e pending
		var ok bool
		select {
		case e, ok = <-inflight:
		default:
			flush()
			select {
			case e, ok = <-inflight:
			case <-abort:
				return nil
			}
		}
		if !ok {
			return nil
		}
		select {
		case <-e.tok.Done():
		default:
			flush()
			stall.Reset(time.Until(e.sent.Add(p.o.AckTimeout)))
			select {
			case <-e.tok.Done():
			case <-abort:
				return nil
			case <-stall.C:
				p.log.Warn("no PUBACK in time; dropping the connection", "seq", e.seq, "waited", time.Since(e.sent).Round(time.Millisecond).String())
				s.closeConn()
				return ErrAckTimeout
			}
		}
		if err := e.tok.Error(); err != nil {
			return fmt.Errorf("publish seq %d: %w", e.seq, err)
		}
		p.prog.inflight.Add(-1)
		if o := p.o.Metrics.Latency; o != nil {
			o.Observe(time.Since(e.sent).Seconds())
		}
		batch = append(batch, e.seq)
		if len(batch) >= maxDeleteBatch {
			flush()
			if !p.waitDeleter(abort) {
				return nil
			}
		}
	}
}

// maxQueuedDeletes is how many delivered readings may wait for the deleter
// before the acker waits for it.
const maxQueuedDeletes = 4 * maxDeleteBatch

// delivered hands acknowledged seqs to the deleter.
func (p *Publisher) delivered(seqs []uint64) {
	p.led.delivered(seqs)
	add(p.o.Metrics.Published, len(seqs))
	p.prog.touch()
}

// waitDeleter waits while the deleter is maxQueuedDeletes behind; false
// when abort came first.
func (p *Publisher) waitDeleter(abort <-chan struct{}) bool {
	for {
		n, freed := p.led.backlog()
		if n < maxQueuedDeletes {
			return true
		}
		select {
		case <-freed:
		case <-abort:
			return false
		}
	}
}
