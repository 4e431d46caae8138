package broker

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
)

// Confirmer stands in for the forwarder in delivery=kafka tests: it
// publishes confirmations on a device's ack topic, QoS 1.
type Confirmer struct {
	c      mqtt.Client
	prefix string
	id     string
}

// NewConfirmer connects a confirming client to url; it disconnects at cleanup.
func NewConfirmer(t testing.TB, url string) *Confirmer {
	t.Helper()
	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("test-forwarder").
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectRetry(true))
	tok := cl.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("confirmer connect to %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	return &Confirmer{c: cl, prefix: "sensors", id: "test-forwarder"}
}

// Confirm publishes one confirmation covering seqs of device and waits for
// the broker's PUBACK.
func (c *Confirmer) Confirm(t testing.TB, device string, seqs ...uint64) {
	t.Helper()
	var set confirm.Set
	for _, s := range seqs {
		set.Add(s)
	}
	m := confirm.Message{ForwarderID: c.id, Seqs: set.Ranges()}
	c.Raw(t, device, confirm.Append(nil, &m))
}

// Raw publishes payload on device's ack topic, as a broken or hostile
// forwarder might.
func (c *Confirmer) Raw(t testing.TB, device string, payload []byte) {
	t.Helper()
	tok := c.c.Publish(confirm.Topic(c.prefix, device), 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish confirmation: %v", tok.Error())
	}
}

// Auto confirms, every interval until the test ends, every seq of device
// that cnt has seen: a forwarder whose Kafka takes everything. It confirms
// them all again each time (a real forwarder confirms duplicates too), so
// a confirmation lost with a broker restart is made good.
func (c *Confirmer) Auto(t testing.TB, cnt *Counter, device string, every time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var set confirm.Set
			for _, s := range cnt.Seqs(device) {
				set.Add(s)
			}
			if set.Len() == 0 {
				continue
			}
			m := confirm.Message{ForwarderID: c.id, Seqs: set.Ranges()}
			c.c.Publish(confirm.Topic(c.prefix, device), 1, false, confirm.Append(nil, &m)).WaitTimeout(5 * time.Second)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// PromptBacklog is cloud-forwarder's early confirmation: that many seqs
// waiting for one device are confirmed before the interval ends.
const PromptBacklog = 1000

// Prompt stands in for a forwarder whose Kafka takes every reading at
// once: it receives the readings (QoS 1) and confirms each device's seqs
// as cloud-forwarder does, every interval, or at once when PromptBacklog
// wait. Only what it received is confirmed, so a reading it never got is
// never deleted. Unlike Auto it keeps no history: it serves drains of
// millions of readings.
type Prompt struct {
	c      mqtt.Client
	prefix string
	id     string

	mu      sync.Mutex
	sets    map[string]*confirm.Set
	pending int
	early   chan struct{} // 1-buffered: PromptBacklog seqs wait
	sent    int           // seqs confirmed so far
}

// ConfirmPromptly connects with o (Filter default "sensors/+/+/reading",
// ClientID default "prompt-forwarder"; a clean session: the readings it
// misses before it is subscribed are the agent's to re-send) and confirms
// every interval until the test ends.
func ConfirmPromptly(tb testing.TB, o SubOptions, every time.Duration) *Prompt {
	tb.Helper()
	if o.Filter == "" {
		o.Filter = "sensors/+/+/reading"
	}
	if o.ClientID == "" {
		o.ClientID = "prompt-forwarder"
	}
	p := &Prompt{prefix: "sensors", id: o.ClientID, sets: map[string]*confirm.Set{}, early: make(chan struct{}, 1)}
	p.c = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(o.URL).SetClientID(o.ClientID).
		SetUsername(o.Username).SetPassword(o.Password).SetTLSConfig(o.TLS).
		SetCleanSession(true).SetOrderMatters(false).SetMessageChannelDepth(10000))
	if tok := p.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		tb.Fatalf("prompt confirmer connect to %s: %v", o.URL, tok.Error())
	}
	if tok := p.c.Subscribe(o.Filter, 1, p.onReading); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		tb.Fatalf("prompt confirmer subscribe %s: %v", o.Filter, tok.Error())
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-p.early:
			}
			p.flush()
		}
	}()
	tb.Cleanup(func() { cancel(); wg.Wait(); p.c.Disconnect(100) })
	return p
}

var seqKey = []byte(`"seq":`)

func (p *Prompt) onReading(_ mqtt.Client, m mqtt.Message) {
	seq, ok := payloadSeq(m.Payload())
	parts := strings.Split(m.Topic(), "/")
	if !ok || len(parts) != 4 {
		return
	}
	p.mu.Lock()
	s := p.sets[parts[1]]
	if s == nil {
		s = &confirm.Set{}
		p.sets[parts[1]] = s
	}
	s.Add(seq)
	p.pending++
	early := p.pending == PromptBacklog
	p.mu.Unlock()
	if early {
		select {
		case p.early <- struct{}{}:
		default:
		}
	}
}

// payloadSeq finds a reading's seq without decoding the rest: the confirmer
// must not be what limits a drain.
func payloadSeq(b []byte) (uint64, bool) {
	i := bytes.Index(b, seqKey)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(seqKey):]
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	seq, err := strconv.ParseUint(string(b[:j]), 10, 64)
	return seq, err == nil
}

func (p *Prompt) flush() {
	type msg struct {
		dev string
		m   confirm.Message
		n   int
	}
	var msgs []msg
	p.mu.Lock()
	p.pending = 0
	for dev, s := range p.sets {
		if s.Len() == 0 {
			continue
		}
		x := msg{dev: dev, m: confirm.Message{ForwarderID: p.id, Seqs: s.Ranges()}}
		for _, r := range x.m.Seqs {
			x.n += int(r.Last - r.First + 1)
		}
		msgs = append(msgs, x)
		s.Reset()
	}
	p.mu.Unlock()
	for _, x := range msgs {
		if tok := p.c.Publish(confirm.Topic(p.prefix, x.dev), 1, false, confirm.Append(nil, &x.m)); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			p.mu.Lock()
			p.sent += x.n
			p.mu.Unlock()
		}
	}
}

// Confirmed is how many seqs it has confirmed (duplicates counted).
func (p *Prompt) Confirmed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}
