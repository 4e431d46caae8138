package broker

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// Confirmer stands in for the forwarder in delivery=kafka tests: it
// publishes confirmations on a device's ack topic, QoS 1, signed once
// SignWith gave it a key.
type Confirmer struct {
	c      mqtt.Client
	prefix string
	id     string
	key    *sign.Signer
}

// SignWith makes Confirm and Auto sign every confirmation with key, as a
// forwarder with FORWARDER_CONFIRM_KEY_FILE does. Call it before them.
func (c *Confirmer) SignWith(key *sign.Signer) *Confirmer {
	c.key = key
	return c
}

// message builds device's confirmation of rs, signed when c has a key.
func (c *Confirmer) message(device string, rs []confirm.Range) []byte {
	m := confirm.Message{ForwarderID: c.id, Seqs: rs}
	if c.key != nil {
		confirm.Sign(c.key, device, &m)
	}
	return confirm.Append(nil, &m)
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
	c.Raw(t, device, c.message(device, set.Ranges()))
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
			c.c.Publish(confirm.Topic(c.prefix, device), 1, false, c.message(device, set.Ranges())).WaitTimeout(5 * time.Second)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// PromptBacklog is cloud-forwarder's early confirmation: that many seqs
// waiting for one device are confirmed before the interval ends.
const PromptBacklog = 1000

// Prompt stands in for a forwarder whose Kafka takes every reading at
// once: it receives the readings and confirms each device's seqs as
// cloud-forwarder does, every interval, or at once when PromptBacklog
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
	early   chan struct{}      // 1-buffered: PromptBacklog seqs wait
	every   chan time.Duration // SetInterval
	cancel  context.CancelFunc
	done    chan struct{}
}

// PromptOptions configure StartPrompt.
type PromptOptions struct {
	SubOptions // Filter default "sensors/+/+/reading", ClientID default "prompt-forwarder"
	// QoS of the subscription: 1 as the forwarder, or 0 to keep the
	// confirmer's own cost small where it shares the machine with what is
	// measured (a reading lost on the way is then re-sent after
	// confirm_timeout).
	QoS byte
	// Every is the confirm interval (FORWARDER_CONFIRM_INTERVAL); 0
	// confirms nothing until SetInterval.
	Every time.Duration
}

// ConfirmPromptly starts a Prompt at QoS 1 confirming every interval until
// the test ends.
func ConfirmPromptly(tb testing.TB, o SubOptions, every time.Duration) *Prompt {
	tb.Helper()
	p, err := StartPrompt(PromptOptions{SubOptions: o, QoS: 1, Every: every})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// StartPrompt connects (a clean session: what it misses before it is
// subscribed is the agent's to re-send) and subscribes; Close ends it.
func StartPrompt(o PromptOptions) (*Prompt, error) {
	if o.Filter == "" {
		o.Filter = "sensors/+/+/reading"
	}
	if o.ClientID == "" {
		o.ClientID = "prompt-forwarder"
	}
	p := &Prompt{prefix: "sensors", id: o.ClientID, sets: map[string]*confirm.Set{},
		early: make(chan struct{}, 1), every: make(chan time.Duration), done: make(chan struct{})}
	p.c = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(o.URL).SetClientID(o.ClientID).
		SetUsername(o.Username).SetPassword(o.Password).SetTLSConfig(o.TLS).
		SetCleanSession(true).SetOrderMatters(false).SetMessageChannelDepth(10000))
	if tok := p.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("prompt confirmer connect to %s: %v", o.URL, tok.Error())
	}
	if tok := p.c.Subscribe(o.Filter, o.QoS, p.onReading); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		p.c.Disconnect(100)
		return nil, fmt.Errorf("prompt confirmer subscribe %s: %v", o.Filter, tok.Error())
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.loop(ctx, o.Every)
	return p, nil
}

// loop confirms every interval, or early, until ctx ends.
func (p *Prompt) loop(ctx context.Context, every time.Duration) {
	defer close(p.done)
	for {
		var tick <-chan time.Time
		var t *time.Timer
		if every > 0 {
			t = time.NewTimer(every)
			tick = t.C
		}
		select {
		case <-ctx.Done():
			return
		case every = <-p.every:
		case <-tick:
			p.flush()
		case <-p.early:
			if every > 0 {
				p.flush()
			}
		}
		if t != nil {
			t.Stop()
		}
	}
}

// SetInterval changes the confirm interval; 0 stops confirming (what
// arrives meanwhile is confirmed once an interval is set again).
func (p *Prompt) SetInterval(d time.Duration) {
	select {
	case p.every <- d:
	case <-p.done:
	}
}

// Close stops confirming and disconnects.
func (p *Prompt) Close() {
	p.cancel()
	<-p.done
	p.c.Disconnect(100)
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
	}
	var msgs []msg
	p.mu.Lock()
	p.pending = 0
	for dev, s := range p.sets {
		if s.Len() == 0 {
			continue
		}
		msgs = append(msgs, msg{dev: dev, m: confirm.Message{ForwarderID: p.id, Seqs: s.Ranges()}})
		s.Reset()
	}
	p.mu.Unlock()
	for _, x := range msgs {
		// Not checked: a lost confirmation is the agent's to re-send for.
		p.c.Publish(confirm.Topic(p.prefix, x.dev), 1, false, confirm.Append(nil, &x.m)).WaitTimeout(5 * time.Second)
	}
}
