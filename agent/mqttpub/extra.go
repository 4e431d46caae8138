package mqttpub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Subscription is a topic besides the ack topic and what to do with its
// messages. Handle runs on the MQTT client's goroutine: it must not block
// (hand the payload on). A retained message is delivered at every connect.
type Subscription struct {
	Topic  string
	Handle func(payload []byte)
}

// ErrNotConnected is returned by Publish between connections.
var ErrNotConnected = errors.New("not connected to the MQTT broker")

// route hands a message to the ack handler or to its subscription.
func (s *session) route(c mqtt.Client, m mqtt.Message) {
	if m.Topic() == s.p.ackTop {
		if s.p.o.Delivery == DeliveryKafka {
			s.onMessage(c, m)
		}
		return
	}
	for _, sub := range s.p.o.Subscriptions {
		if sub.Topic == m.Topic() {
			sub.Handle(m.Payload())
			return
		}
	}
}

// subscribeExtra subscribes to Options.Subscriptions. Only a lost
// connection or ctx ends it with an error; a refusal is logged.
func (s *session) subscribeExtra(ctx context.Context) error {
	p := s.p
	if len(p.o.Subscriptions) == 0 {
		return nil
	}
	filters := map[string]byte{}
	for _, sub := range p.o.Subscriptions {
		filters[sub.Topic] = 1
	}
	tok := s.c.SubscribeMultiple(filters, s.route)
	t := time.NewTimer(p.o.AckTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("subscribe fleet topics: %w", ErrAckTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe fleet topics: %w", err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code == 0x80 {
				p.log.Warn("the broker refused a fleet subscription; remote config or commands on it are not received", "topic", topic)
			}
		}
	}
	return nil
}

// Publish sends payload on topic, QoS 1, over the current connection and
// waits for the PUBACK (or ctx). It fails with ErrNotConnected between
// connections: the caller decides whether to try again.
func (p *Publisher) Publish(ctx context.Context, topic string, payload []byte, retained bool) error {
	p.sessMu.Lock()
	c := p.sessClient
	p.sessMu.Unlock()
	if c == nil {
		return ErrNotConnected
	}
	tok := c.Publish(topic, 1, retained, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ResendNow makes every reading published and not yet confirmed due to be
// sent again at once (kafka mode; the `resend` fleet command), and
// returns how many that is.
func (p *Publisher) ResendNow() int { return p.led.resendAll() }

// resendAll marks every sent, unconfirmed reading due and wakes the
// sender.
func (l *ledger) resendAll() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for ; l.head < len(l.fifo); l.head++ {
		it := l.fifo[l.head]
		e, ok := l.seqs[it.seq]
		if !ok || e.state != stSent || e.sent != it.sent {
			continue
		}
		e.state = stDue
		l.seqs[it.seq] = e
		l.nSent--
		l.due = append(l.due, it.seq)
		n++
	}
	l.compact()
	if n == 0 {
		return 0
	}
	slices.Sort(l.due)
	l.due = slices.Compact(l.due)
	// Wake a sender waiting for the next round; the round it then runs
	// finds nothing left and clears the schedule.
	close(l.sched)
	l.sched = make(chan struct{})
	l.signal()
	return n
}
