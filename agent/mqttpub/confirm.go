package mqttpub

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/agent/health"
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

// Status is the retained JSON message on {prefix}/{device_id}/status:
// {"v":1,"state":"online","delivery":"kafka","unconfirmed":12,"ts":"...",
// "sensors":{"ds18b20-1":{"state":"failing","consecutive_failures":4,...}}}
// on connect (and again, at most every StatusInterval, when the count or
// the sensors' health changed), {"v":1,"state":"offline",...} on a clean
// stop, and as the last will {"v":1,"state":"offline","delivery":"kafka"}
// (no counts, no sensors, no ts).
type Status struct {
	V        int      `json:"v"`
	State    string   `json:"state"` // "online" or "offline"
	Delivery Delivery `json:"delivery,omitempty"`
	// Unconfirmed (kafka) is how many readings wait for a confirmation.
	Unconfirmed *int      `json:"unconfirmed,omitempty"`
	TS          time.Time `json:"ts,omitzero"`
	// Sensors is each sensor's health as of TS (Options.Health).
	Sensors map[string]health.Sensor `json:"sensors,omitempty"`
}

// Health is where the status message's sensors come from: agent/health's
// Board. Snapshot's version changes when the health is worth telling.
type Health interface {
	Snapshot() (sensors map[string]health.Sensor, version uint64)
}

// status returns the status payload for state, with the current counts
// and health.
func (p *Publisher) status(state string) []byte {
	m := Status{V: 1, State: state, Delivery: p.o.Delivery, TS: time.Now().UTC().Truncate(time.Millisecond)}
	if p.o.Delivery == DeliveryKafka {
		n := p.led.unconfirmedN()
		m.Unconfirmed = &n
	}
	if p.o.Health != nil {
		m.Sensors, _ = p.o.Health.Snapshot()
	}
	b, _ := json.Marshal(m) // cannot fail: plain fields
	return b
}

// will is the last will: offline, without counts (it is fixed at connect).
func (p *Publisher) will() string {
	b, _ := json.Marshal(Status{V: 1, State: "offline", Delivery: p.o.Delivery})
	return string(b)
}

// statusLoop publishes the status again every StatusInterval while the
// unconfirmed count or the sensors' health changes from last (what the
// status published on connect said), until ctx ends.
func (s *session) statusLoop(ctx context.Context, last statusKey) {
	p := s.p
	if p.o.Delivery != DeliveryKafka && p.o.Health == nil {
		return
	}
	t := time.NewTicker(p.o.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if k := s.statusKey(); k != last {
			last = k
			s.c.Publish(p.statusTop, 1, true, p.status("online")) // not waited for: the next one will do
			p.log.Debug("status published", "unconfirmed", k.unconfirmed, "health_version", k.health)
		}
	}
}

// statusKey is what makes the status worth publishing again.
type statusKey struct {
	unconfirmed int
	health      uint64
}

func (s *session) statusKey() statusKey {
	var k statusKey
	if s.p.o.Delivery == DeliveryKafka {
		k.unconfirmed = s.p.led.unconfirmedN()
	}
	if s.p.o.Health != nil {
		_, k.health = s.p.o.Health.Snapshot()
	}
	return k
}
