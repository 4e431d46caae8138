package forwarder

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// publisher is the part of the paho client the confirmer uses.
type publisher interface {
	Publish(topic string, qos byte, retained bool, payload any) mqtt.Token
}

const (
	// maxRanges keeps one confirmation under confirm.MaxPayload: a range is
	// at most 43 bytes ("[a,b]," with 20-digit numbers) and the rest of the
	// message (version, forwarder id up to 256 bytes, escaped) under 2 KiB.
	maxRanges = (confirm.MaxPayload - 2048) / 43
	// confirmTimeout is how long a published confirmation may wait for its
	// PUBACK before its seqs are taken back and sent again. paho keeps the
	// message across reconnects, so this only bounds a stuck session.
	confirmTimeout = 30 * time.Second
	// confirmPoll is how often outstanding confirmations are checked.
	confirmPoll = 50 * time.Millisecond
	// idleDevice is how long a device with nothing to confirm keeps its entry.
	idleDevice = 10 * time.Minute
	// backlogConfirm seqs waiting for one device make its confirmation due
	// before the interval ends. A device draining a backlog sends up to
	// its mqtt.max_unconfirmed (10,000) readings and then waits for
	// confirmations: one per interval would cap the drain at 10,000
	// readings/s. One message per 1,000 readings still costs the broker
	// 0.1% more messages, and a device at its usual rate never gets there.
	backlogConfirm = 1000
	// minConfirm seqs make a confirmation worth a message: with several
	// replicas in a share group each holds a part of a device's readings,
	// and one message per replica per interval would cost the broker a
	// message for every two readings of a 4-reading/s device. Waiting for
	// 4 keeps confirmations at most a quarter of the readings.
	minConfirm = 4
	// maxConfirmWait bounds that wait for a slow device, well inside the
	// agent's mqtt.confirm_timeout (60 s; it re-sends past that).
	maxConfirmWait = 10 * time.Second
)

// confirmer tells devices which of their readings Kafka has: seqs are added
// by the Kafka completion callback (never before the ack) and published by
// run, coalesced into ranges, at most one message per device per interval
// (or per backlogConfirm seqs, while a device drains a backlog), on
// {prefix}/{device_id}/ack at QoS 1. While MQTT is down they accumulate,
// bounded per device by the coalescing, and go out after the reconnect.
type confirmer struct {
	id       string       // forwarder_id in every message
	key      *sign.Signer // signs every message; nil: unsigned
	interval time.Duration
	log      *slog.Logger
	m        *metrics

	mu   sync.Mutex // guards devs and each device's pending set
	devs map[string]*device
	kick chan struct{} // a device got its first pending seq, or MQTT came back
}

// device is one device's confirmation state; key "prefix/device_id".
type device struct {
	topic   string      // {prefix}/{device_id}/ack
	id      string      // device_id, from the topic the readings came on: what the signature names
	pending confirm.Set // acknowledged by Kafka, not yet published; guarded by confirmer.mu
	waiting bool        // pending is not empty; guarded by confirmer.mu
	added   int         // seqs added to pending since the last publish; guarded by confirmer.mu
	since   time.Time   // when pending got its first seq; guarded by confirmer.mu

	// Owned by the run goroutine.
	last   time.Time       // when the last message was published
	tok    mqtt.Token      // the outstanding publish, nil if none
	sent   []confirm.Range // what tok carries
	sentAt time.Time
}

func newConfirmer(id string, key *sign.Signer, interval time.Duration, log *slog.Logger, m *metrics) *confirmer {
	return &confirmer{id: id, key: key, interval: interval, log: log, m: m,
		devs: map[string]*device{}, kick: make(chan struct{}, 1)}
}

// add records the confirmable readings among ps, which Kafka acknowledged.
// It never blocks on the network: the Kafka-ack path calls it.
func (c *confirmer) add(ps []*pending) {
	kick := false
	c.mu.Lock()
	for _, p := range ps {
		if p.ackTo == nil {
			continue
		}
		d := c.devs[string(p.ackTo)]
		if d == nil {
			d = &device{topic: string(p.ackTo) + "/ack", id: lastLevel(string(p.ackTo))}
			c.devs[string(p.ackTo)] = d
		}
		if !d.waiting {
			d.waiting, d.since, kick = true, time.Now(), true
		}
		d.pending.Add(p.seq)
		switch d.added++; d.added {
		case minConfirm: // due one interval after the last, no longer maxConfirmWait after the first
			kick = true
		case backlogConfirm:
			kick = true // due now, whatever the interval says
		}
	}
	c.mu.Unlock()
	if kick {
		c.wake()
	}
}

// lastLevel is the last level of an MQTT topic: the device id of
// "{prefix}/{device_id}", whatever levels the prefix has.
func lastLevel(topic string) string {
	return topic[strings.LastIndexByte(topic, '/')+1:]
}

func (c *confirmer) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run publishes confirmations until ctx ends. connected reports whether the
// MQTT session is up; publishing while it is down would only fail.
func (c *confirmer) run(ctx context.Context, pub publisher, connected func() bool) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := c.flush(time.Now(), pub, connected(), false)
		if next > 0 {
			t.Reset(next)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-t.C:
		}
		if next > 0 && !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}

// final publishes everything pending regardless of the interval and waits
// up to wait for the PUBACKs. Call it once run has returned, after the last
// Kafka acknowledgement, so a stopping forwarder leaves no device waiting
// for its confirmation timeout.
func (c *confirmer) final(pub publisher, connected bool, wait time.Duration) {
	deadline := time.Now().Add(wait)
	c.flush(time.Now(), pub, connected, true)
	for time.Now().Before(deadline) {
		if c.flush(time.Now(), pub, false, false) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// flush settles finished publishes, publishes what is due (everything when
// all is set), and returns how long until it should run again (0: only when
// kicked).
func (c *confirmer) flush(now time.Time, pub publisher, connected, all bool) time.Duration {
	type out struct {
		d       *device
		payload []byte
	}
	var outs []out
	next := time.Duration(0)
	soon := func(d time.Duration) {
		if next == 0 || d < next {
			next = d
		}
	}
	c.mu.Lock()
	for key, d := range c.devs {
		if d.tok != nil {
			if !c.settle(d, now) {
				soon(confirmPoll)
				continue
			}
		}
		if !d.waiting {
			if now.Sub(d.last) > idleDevice {
				delete(c.devs, key)
			}
			continue
		}
		if !connected {
			continue // the reconnect kicks us
		}
		if due := c.due(d); !all && now.Before(due) {
			soon(due.Sub(now))
			continue
		}
		rs := d.pending.Ranges()
		d.pending.Reset()
		d.waiting, d.added = false, 0
		if len(rs) > maxRanges {
			readd(d, rs[maxRanges:])
			rs = rs[:maxRanges]
			soon(c.interval)
		}
		d.sent, d.last, d.sentAt = rs, now, now
		msg := confirm.Message{ForwarderID: c.id, Seqs: rs}
		if c.key != nil {
			confirm.Sign(c.key, d.id, &msg)
		}
		outs = append(outs, out{d, confirm.Append(nil, &msg)})
		soon(confirmPoll)
	}
	c.mu.Unlock()
	// Publish outside the lock: paho may block up to its write timeout.
	for _, o := range outs {
		o.d.tok = pub.Publish(o.d.topic, 1, false, o.payload)
	}
	return next
}

// due is when d's pending seqs should be published: a device's first
// confirmation at once; then one interval after the last, once minConfirm
// seqs wait or the first has waited maxConfirmWait; and at once when
// backlogConfirm seqs wait. Called with c.mu held.
func (c *confirmer) due(d *device) time.Time {
	switch {
	case d.last.IsZero() || d.added >= backlogConfirm:
		return time.Time{}
	case d.added >= minConfirm:
		return d.last.Add(c.interval)
	}
	return later(d.last.Add(c.interval), d.since.Add(maxConfirmWait))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// settle checks d's outstanding publish; it reports whether d has none any
// more. A failed or stuck publish gives its seqs back to pending. Called
// with c.mu held.
func (c *confirmer) settle(d *device, now time.Time) bool {
	select {
	case <-d.tok.Done():
	default:
		if now.Sub(d.sentAt) < confirmTimeout {
			return false
		}
		c.log.Warn("confirmation not acknowledged by the broker; will send again", "topic", d.topic, "after", confirmTimeout)
		readd(d, d.sent)
		c.m.confirmErrors.Inc()
		d.tok, d.sent = nil, nil
		return true
	}
	if err := d.tok.Error(); err != nil {
		c.log.Warn("confirmation publish failed; will send again", "topic", d.topic, "err", err)
		readd(d, d.sent)
		c.m.confirmErrors.Inc()
	} else {
		msg := confirm.Message{Seqs: d.sent}
		c.m.confirmations.Inc()
		c.m.confirmedSeqs.AddInt64(int64(msg.Count()))
	}
	d.tok, d.sent = nil, nil
	return true
}

// readd puts ranges back into d's pending set. Called with c.mu held.
func readd(d *device, rs []confirm.Range) {
	for _, r := range rs {
		d.pending.AddRange(r)
	}
	d.waiting = d.waiting || len(rs) > 0
}

// pendingDevices counts devices with confirmations waiting, for the gauge.
func (c *confirmer) pendingDevices() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, d := range c.devs {
		if d.waiting {
			n++
		}
	}
	return float64(n)
}
