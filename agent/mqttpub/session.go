package mqttpub

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
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
	p.sessClient = s.c
	p.sessMu.Unlock()
	defer func() {
		p.sessMu.Lock()
		p.sessCancel, p.sessClient = nil, nil
		p.sessMu.Unlock()
		p.prog.setSending(false)
		p.prog.inflight.Store(0) // what the acker dropped is sent again
		p.led.sessionEnded()
	}()
	p.prog.touch()
	go func() {
		select {
		case err := <-s.lost:
			cancel(fmt.Errorf("%w: %w", ErrConnectionLost, err))
		case <-connCtx.Done():
		}
	}()

	online := s.c.Publish(p.statusTop, 1, true, p.o.Status.Status(heartbeat.Online))
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

	statusDone := make(chan struct{})
	go func() { defer close(statusDone); s.statusLoop(connCtx) }()
	defer func() { cancel(nil); <-statusDone }()

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
		deadline := time.Now().Add(p.o.FlushTimeout)
		t := time.AfterFunc(p.o.FlushTimeout, func() { timedOut.Store(true); close(abort) })
		<-ackErr
		t.Stop()
		if timedOut.Load() {
			// The broker stopped answering: do not wait again to say
			// "offline"; the will says it when the broker gives up on us.
			s.dead = true
			return nil
		}
		s.awaitConfirmations(deadline)
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

// awaitConfirmations waits, in kafka mode and until deadline (the same
// FlushTimeout that bounds the wait for PUBACKs), for the confirmations of
// what was published, so a restart does not send it all again. A lost
// connection ends the wait.
func (s *session) awaitConfirmations(deadline time.Time) {
	p := s.p
	if p.o.Delivery != DeliveryKafka {
		return
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		n, changed := p.led.unconfirmedWait()
		if n == 0 {
			return
		}
		select {
		case <-changed:
		case <-t.C:
			p.log.Info("stopping with readings not yet confirmed; they are sent again at the next start", "unconfirmed", n)
			return
		case <-s.lost:
			return
		}
	}
}

func (s *session) cause(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// sender publishes the queue in seq order, peeking past everything in
// flight and blocking while the window is full. In kafka mode it also
// sends again what a re-send round made due, and waits at the unconfirmed
// cap. Readings the ledger holds are skipped.
func (s *session) sender(ctx context.Context, inflight chan<- pending) error {
	p := s.p
	p.prog.setSending(true)
	var after uint64
	for ctx.Err() == nil {
		if n := p.led.round(time.Now()); n > 0 {
			p.log.Info("re-sending readings not confirmed in time", "count", n,
				"confirm_timeout", p.o.ConfirmTimeout.String(), "next_round_in", time.Until(p.led.next()).Round(time.Second).String())
		}
		if err := s.resendDue(ctx, inflight); err != nil {
			return err
		}
		n := max(1, min(p.o.Batch, cap(inflight)-len(inflight)))
		recs, err := p.q.Peek(after, n)
		if err != nil {
			return fmt.Errorf("%w: peek: %w", errQueue, err)
		}
		if len(recs) == 0 {
			if err := s.idle(ctx, func(wctx context.Context) error { return p.q.Wait(wctx, after) }); err != nil {
				return err
			}
			continue
		}
		send, cursor, atCap := p.led.admit(recs, time.Now())
		if err := s.publish(ctx, inflight, send); err != nil {
			return err
		}
		after = cursor
		if atCap {
			if ch := p.led.capWait(); ch != nil {
				// At the unconfirmed cap: wait for confirmations (or a
				// re-send round); the readings wait in the queue.
				err := s.idle(ctx, func(wctx context.Context) error {
					select {
					case <-ch:
					case <-wctx.Done():
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
		}
	}
	return ctx.Err()
}

// idle runs wait as a legitimate pause (not a stall), bounded by the next
// re-send round, also when that round is scheduled or brought forward
// while waiting (by a PUBACK or a confirmation). wait's error is the
// queue's unless a context ended it.
func (s *session) idle(ctx context.Context, wait func(context.Context) error) error {
	p := s.p
	next, sched := p.led.schedule()
	var wctx context.Context
	var cancel context.CancelFunc
	if next.IsZero() {
		wctx, cancel = context.WithCancel(ctx)
	} else {
		wctx, cancel = context.WithDeadline(ctx, next)
	}
	defer cancel()
	if p.o.Delivery == DeliveryKafka {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			select {
			case <-sched:
				cancel()
			case <-stop:
			}
		}()
		defer func() { close(stop); <-done }()
	}
	p.prog.setSending(false)
	err := wait(wctx)
	p.prog.setSending(true)
	if err != nil && wctx.Err() == nil {
		return fmt.Errorf("%w: wait: %w", errQueue, err)
	}
	return nil
}

// resendDue publishes again the readings a re-send round made due.
func (s *session) resendDue(ctx context.Context, inflight chan<- pending) error {
	p := s.p
	for first := p.led.firstDue(); first != 0; first = p.led.firstDue() {
		n := max(1, min(p.o.Batch, cap(inflight)-len(inflight)))
		recs, err := p.q.Peek(first-1, n)
		if err != nil {
			return fmt.Errorf("%w: peek: %w", errQueue, err)
		}
		send := p.led.admitDue(recs, n, time.Now())
		add(p.o.Metrics.Resent, len(send))
		if err := s.publish(ctx, inflight, send); err != nil {
			return err
		}
	}
	return nil
}

// publish hands recs to paho and the acker, blocking while the window is full.
func (s *session) publish(ctx context.Context, inflight chan<- pending, recs []buffer.Record) error {
	p := s.p
	for _, r := range recs {
		tok := s.c.Publish(p.topic(r.Sensor), 1, false, r.Payload)
		p.prog.inflight.Add(1)
		p.prog.touch()
		select {
		case inflight <- pending{seq: r.Seq, tok: tok, sent: time.Now()}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
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
			p.acked(batch)
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
			o.Update(time.Since(e.sent).Seconds())
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

// acked records PUBACKs: broker mode hands the seqs to the deleter, kafka
// mode waits for their confirmation.
func (p *Publisher) acked(seqs []uint64) {
	p.led.acked(seqs)
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
