package mqttpub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
)

// subscribe subscribes the session to the device's ack topic (kafka mode).
// The subscription lives in the broker's persistent session; subscribing
// on every connect repairs a session the broker lost.
func (s *session) subscribe(ctx context.Context) error {
	p := s.p
	tok := s.c.Subscribe(p.ackTop, 1, s.onMessage)
	t := time.NewTimer(p.o.AckTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("subscribe %s: %w", p.ackTop, ErrAckTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe %s: %w", p.ackTop, err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[p.ackTop] == 0x80 {
		return fmt.Errorf("%w: %s", ErrSubscribeRefused, p.ackTop)
	}
	return nil
}

// onMessage handles a message on the ack topic, and anything else the
// persistent session delivers before the subscription is renewed.
func (s *session) onMessage(_ mqtt.Client, m mqtt.Message) {
	p := s.p
	if m.Topic() != p.ackTop {
		return
	}
	msg, err := confirm.Decode(m.Payload())
	if err != nil {
		p.badConfirm("malformed", err, "")
		return
	}
	if keys := p.o.ConfirmKeys; keys != nil {
		switch err := confirm.Verify(keys, p.o.DeviceID, &msg); {
		case errors.Is(err, confirm.ErrUnsigned):
			p.badConfirm("unsigned", err, msg.ForwarderID)
			return
		case err != nil:
			p.badConfirm("bad_signature", err, msg.ForwarderID)
			return
		}
	}
	n, unsent := p.led.confirm(&msg, time.Now())
	if n > 0 {
		add(p.o.Metrics.Confirmed, n)
		p.prog.touch()
	}
	if unsent > 0 {
		p.badConfirm("unsent", fmt.Errorf("%d confirmed seqs are above any this device sent", unsent), msg.ForwarderID)
	}
}

// badConfirm counts an ignored confirmation and logs it at most once a minute.
func (p *Publisher) badConfirm(reason string, err error, forwarder string) {
	if v := p.o.Metrics.BadConfirms; v != nil {
		v.With(reason).Inc()
	}
	if ok, suppressed := p.badLog.allow(time.Now(), time.Minute); ok {
		p.log.Warn("ignored a confirmation", "reason", reason, "err", err, "forwarder_id", forwarder,
			"topic", p.ackTop, "not_logged", suppressed)
	}
}

// rateLimit lets one event through per interval and counts the others.
type rateLimit struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *rateLimit) allow(now time.Time, every time.Duration) (ok bool, suppressed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() && now.Sub(r.last) < every {
		r.suppressed++
		return false, 0
	}
	r.last, suppressed, r.suppressed = now, r.suppressed, 0
	return true, suppressed
}
