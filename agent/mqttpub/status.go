package mqttpub

import (
	"context"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

// StatusSource supplies the retained status message on
// {prefix}/{device_id}/status: agent/status's Reporter.
type StatusSource interface {
	// Status is the message for state (heartbeat.Online or Offline). The
	// publisher publishes it at once: on connect, when Due returns, and
	// on a clean stop.
	Status(state string) []byte
	// Will is the last will, set at each connect.
	Will() []byte
	// Due returns when the status should be published again, or ctx's
	// error when ctx ends first.
	Due(ctx context.Context) error
}

// statusLoop publishes the status each time it is due, until ctx ends.
func (s *session) statusLoop(ctx context.Context) {
	p := s.p
	for p.o.Status.Due(ctx) == nil {
		s.c.Publish(p.statusTop, 1, true, p.o.Status.Status(heartbeat.Online)) // not waited for: the next one will do
	}
}

// defaultStatus is the status of a publisher without Options.Status: the
// delivery mode and the unconfirmed count, every StatusInterval.
type defaultStatus struct{ p *Publisher }

func (d *defaultStatus) Status(state string) []byte {
	h := heartbeat.Heartbeat{State: state, TS: time.Now().Unix(), Delivery: string(d.p.o.Delivery), StatusInterval: d.interval()}
	if d.p.o.Delivery == DeliveryKafka {
		h.Buffer = &heartbeat.Buffer{Unconfirmed: uint64(d.p.led.unconfirmedN())}
		h.ConfirmUnsigned = d.p.o.ConfirmKeys == nil
	}
	return heartbeat.Encode(&h)
}

func (d *defaultStatus) Will() []byte {
	return heartbeat.Encode(&heartbeat.Heartbeat{State: heartbeat.Offline, Delivery: string(d.p.o.Delivery), StatusInterval: d.interval()})
}

// interval is StatusInterval in whole seconds, the heartbeat's status_interval.
func (d *defaultStatus) interval() int64 { return int64(d.p.o.StatusInterval / time.Second) }

func (d *defaultStatus) Due(ctx context.Context) error {
	t := time.NewTimer(d.p.o.StatusInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
