package broker

import (
	"context"
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
