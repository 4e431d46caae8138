package stack

import (
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// Ack is one confirmation a device received from a forwarder.
type Ack struct {
	Topic string
	At    time.Time
	Msg   confirm.Message
}

// AckCollector is the devices' side of confirmations in the forwarder's
// tests: an MQTT client subscribed to ack topics on a persistent session
// (so a broker outage loses none), decoding what arrives.
type AckCollector struct {
	c    mqtt.Client
	mu   sync.Mutex
	acks []Ack
	bad  int
}

// CollectAcks subscribes client id to filter (e.g. "sensors/+/ack") at QoS 1
// on b's TLS listener with the publisher's credentials, until the test ends.
func CollectAcks(tb testing.TB, b *broker.Broker, certs *pki.PKI, id, filter string) *AckCollector {
	tb.Helper()
	return CollectAcksWith(tb, AckOptions{PubOptions: broker.PubOptions{URL: b.TLSURL(), TLS: certs.Client(),
		Username: PubUser, Password: PubPassword, ClientID: id}, Filter: filter})
}

// AckOptions configures CollectAcksWith.
type AckOptions struct {
	broker.PubOptions // where and as whom to connect
	Filter            string
}

// CollectAcksWith is CollectAcks on any broker, as any user (a device with
// its own credentials, say). The subscription must be granted.
func CollectAcksWith(tb testing.TB, o AckOptions) *AckCollector {
	tb.Helper()
	a := &AckCollector{}
	handle := func(_ mqtt.Client, m mqtt.Message) {
		msg, err := confirm.Decode(m.Payload())
		a.mu.Lock()
		defer a.mu.Unlock()
		if err != nil {
			a.bad++
			return
		}
		a.acks = append(a.acks, Ack{Topic: m.Topic(), At: time.Now(), Msg: msg})
	}
	opts := mqtt.NewClientOptions().AddBroker(o.URL).SetClientID(o.ClientID).SetUsername(o.Username).SetPassword(o.Password).
		SetCleanSession(false).SetTLSConfig(o.TLS).SetAutoReconnect(true).SetConnectRetry(true).
		SetMaxReconnectInterval(500 * time.Millisecond).SetDefaultPublishHandler(handle).
		SetOnConnectHandler(func(c mqtt.Client) { c.Subscribe(o.Filter, 1, nil) })
	c := mqtt.NewClient(opts)
	a.c = c
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		tb.Fatalf("ack collector connect: %v", t.Error())
	}
	t := c.Subscribe(o.Filter, 1, nil)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil || t.(*mqtt.SubscribeToken).Result()[o.Filter] >= 0x80 {
		tb.Fatalf("ack collector: subscription to %s not granted: %v", o.Filter, t.Error())
	}
	tb.Cleanup(func() { c.Disconnect(100) })
	return a
}

// Publish publishes payload on topic at QoS 1 from the collector's own
// connection and waits for the PUBACK: a device whose login is bound to
// one client id publishes its readings where it reads its confirmations.
func (a *AckCollector) Publish(tb testing.TB, topic string, payload []byte) {
	tb.Helper()
	if t := a.c.Publish(topic, 1, false, payload); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		tb.Fatalf("publish %s: %v", topic, t.Error())
	}
}

// Acks returns the confirmations received so far, in arrival order.
func (a *AckCollector) Acks() []Ack {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.acks)
}

// Undecodable counts messages on the ack topics that confirm.Decode refused.
func (a *AckCollector) Undecodable() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bad
}

// Confirmed returns the seqs confirmed on topic (e.g. "sensors/pi-0/ack")
// and how many times each was.
func (a *AckCollector) Confirmed(topic string) map[uint64]int {
	seen := map[uint64]int{}
	for _, ack := range a.Acks() {
		if ack.Topic != topic {
			continue
		}
		for _, r := range ack.Msg.Seqs {
			for s := r.First; ; s++ {
				seen[s]++
				if s == r.Last {
					break
				}
			}
		}
	}
	return seen
}
