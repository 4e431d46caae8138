package broker

import (
	"crypto/tls"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Counter counts readings by (device_id, seq), and the topics they came on.
// A device's seqs start above its buffer's floor (buffer.Stats.SeqFloor);
// tell the Counter with From, or it counts from 1.
type Counter struct {
	mu      sync.Mutex
	seen    map[string]map[uint64]int
	floor   map[string]uint64
	total   int
	bad     []string
	changed chan struct{}
}

// NewCounter returns an empty Counter.
func NewCounter() *Counter {
	return &Counter{seen: map[string]map[uint64]int{}, floor: map[string]uint64{}, changed: make(chan struct{}, 1)}
}

// From says that device's seqs start above floor (its buffer's
// Stats().SeqFloor): Report and Has look for seqs from floor+1 on.
func (c *Counter) From(device string, floor uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.floor[device] = floor
}

// Add decodes one MQTT message; payloads that do not decode, or whose
// topic does not match the reading, are recorded as bad.
func (c *Counter) Add(topic string, payload []byte) {
	r, err := reading.Decode(payload)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err != nil:
		c.bad = append(c.bad, fmt.Sprintf("%s: %v", topic, err))
	case topic != "" && !hasSuffix(topic, "/"+r.DeviceID+"/"+r.Sensor+"/reading"):
		c.bad = append(c.bad, fmt.Sprintf("seq %d on topic %s", r.Seq, topic))
	default:
		m := c.seen[r.DeviceID]
		if m == nil {
			m = map[uint64]int{}
			c.seen[r.DeviceID] = m
		}
		m[r.Seq]++
		c.total++
	}
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func hasSuffix(s, suf string) bool { return len(s) >= len(suf) && s[len(s)-len(suf):] == suf }

// Report is what a Counter saw for one device.
type Report struct {
	Unique, Total, Duplicates int
	MaxSeq                    uint64
	Missing                   []uint64 // seqs in floor+1..MaxSeq never seen (capped at 20)
	MissingCount              int
	Bad                       []string
}

// Report summarises device's readings.
func (c *Counter) Report(device string) Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.seen[device]
	rep := Report{Unique: len(m), Bad: append([]string(nil), c.bad...)}
	for seq, n := range m {
		rep.Total += n
		rep.MaxSeq = max(rep.MaxSeq, seq)
	}
	rep.Duplicates = rep.Total - rep.Unique
	// Walk the gaps between the seqs seen, not the whole range: without
	// From, seqs of a fresh buffer (~10^15) would take for ever.
	next := c.floor[device] + 1
	for _, s := range sortedSeqs(m) {
		if s < next {
			continue
		}
		gap := s - next
		rep.MissingCount += int(min(gap, 1<<31))
		for ; next < s && len(rep.Missing) < 20; next++ {
			rep.Missing = append(rep.Missing, next)
		}
		next = s + 1
	}
	return rep
}

// Has reports whether every seq in floor+1..upto was seen for device.
func (c *Counter) Has(device string, upto uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.seen[device]
	from := c.floor[device] + 1
	if upto >= from && uint64(len(m)) < upto-from+1 {
		return false
	}
	for s := from; s <= upto; s++ {
		if m[s] == 0 {
			return false
		}
	}
	return true
}

// Count is how many times seq of device was seen.
func (c *Counter) Count(device string, seq uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[device][seq]
}

// Unique is the number of distinct seqs seen for device.
func (c *Counter) Unique(device string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen[device])
}

// WaitUnique waits until device has at least n distinct seqs.
func (c *Counter) WaitUnique(t testing.TB, device string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for c.Unique(device) < n {
		select {
		case <-c.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timeout: %d of %d readings of %s after %v", c.Unique(device), n, device, timeout)
		}
	}
}

// WaitAll waits until every seq in floor+1..upto of device was seen.
func (c *Counter) WaitAll(t testing.TB, device string, upto uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !c.Has(device, upto) {
		select {
		case <-c.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			rep := c.Report(device)
			t.Fatalf("timeout after %v: want every seq %d..%d of %s; unique %d, missing %d (first %v), max seq %d",
				timeout, c.from(device), upto, device, rep.Unique, rep.MissingCount, rep.Missing, rep.MaxSeq)
		}
	}
}

func (c *Counter) from(device string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.floor[device] + 1
}

// Seqs returns the distinct seqs of device in order.
func (c *Counter) Seqs(device string) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedSeqs(c.seen[device])
}

func sortedSeqs(m map[uint64]int) []uint64 {
	out := make([]uint64, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// SubOptions configures Subscribe.
type SubOptions struct {
	URL, Username, Password string
	TLS                     *tls.Config
	Filter                  string // default "sensors/+/+/reading"
	ClientID                string // default "counter"
}

// Subscribe connects a paho subscriber (QoS 1, persistent session,
// auto-reconnect) that feeds every message to c. It disconnects at cleanup.
func Subscribe(t testing.TB, c *Counter, o SubOptions) mqtt.Client {
	t.Helper()
	if o.Filter == "" {
		o.Filter = "sensors/+/+/reading"
	}
	if o.ClientID == "" {
		o.ClientID = "counter"
	}
	opts := mqtt.NewClientOptions().AddBroker(o.URL).SetClientID(o.ClientID).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).
		SetResumeSubs(true).SetOrderMatters(false).SetMessageChannelDepth(10000).
		SetUsername(o.Username).SetPassword(o.Password).SetTLSConfig(o.TLS)
	opts.SetOnConnectHandler(func(cl mqtt.Client) {
		cl.Subscribe(o.Filter, 1, func(_ mqtt.Client, m mqtt.Message) { c.Add(m.Topic(), m.Payload()) })
	})
	cl := mqtt.NewClient(opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect to %s: %v", o.URL, tok.Error())
	}
	// Wait until the subscription is in place (the broker SUBACKed).
	sub := cl.Subscribe(o.Filter, 1, func(_ mqtt.Client, m mqtt.Message) { c.Add(m.Topic(), m.Payload()) })
	if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
		t.Fatalf("subscribe: %v", sub.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	return cl
}
