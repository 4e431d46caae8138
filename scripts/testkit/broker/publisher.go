package broker

import (
	"crypto/tls"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Publisher is an MQTT client publishing QoS 1 the way the edge agent does.
type Publisher struct {
	c mqtt.Client
}

// PubOptions configures NewPublisher.
type PubOptions struct {
	URL, Username, Password string
	TLS                     *tls.Config
	ClientID                string // default "publisher"
}

// NewPublisher connects a publisher (clean session, no auto-reconnect); it
// disconnects when the test ends.
func NewPublisher(tb testing.TB, o PubOptions) *Publisher {
	tb.Helper()
	if o.ClientID == "" {
		o.ClientID = "publisher"
	}
	opts := mqtt.NewClientOptions().AddBroker(o.URL).SetClientID(o.ClientID).
		SetUsername(o.Username).SetPassword(o.Password).SetTLSConfig(o.TLS).
		SetCleanSession(true).SetAutoReconnect(false).SetMaxResumePubInFlight(1000)
	c := mqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		tb.Fatalf("publisher connect to %s: %v", o.URL, t.Error())
	}
	tb.Cleanup(func() { c.Disconnect(100) })
	return &Publisher{c: c}
}

// Publish sends payloads to topic at QoS 1 and waits for every PUBACK.
func (p *Publisher) Publish(tb testing.TB, topic string, payloads ...[]byte) {
	tb.Helper()
	toks := make([]mqtt.Token, 0, len(payloads))
	for _, pl := range payloads {
		toks = append(toks, p.c.Publish(topic, 1, false, pl))
	}
	waitAll(tb, toks)
}

// PublishRetained sends payload to topic at QoS 1 with the retain flag, as
// the agent sends its heartbeat, and waits for the PUBACK.
func (p *Publisher) PublishRetained(tb testing.TB, topic string, payload []byte) {
	tb.Helper()
	waitAll(tb, []mqtt.Token{p.c.Publish(topic, 1, true, payload)})
}

// PublishEach sends one message per (topic, payload) pair at QoS 1, all in
// flight at once, and waits for every PUBACK.
func (p *Publisher) PublishEach(tb testing.TB, topics []string, payloads [][]byte) {
	tb.Helper()
	toks := make([]mqtt.Token, 0, len(payloads))
	for i, pl := range payloads {
		toks = append(toks, p.c.Publish(topics[i], 1, false, pl))
	}
	waitAll(tb, toks)
}

func waitAll(tb testing.TB, toks []mqtt.Token) {
	tb.Helper()
	for _, t := range toks {
		if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
			tb.Fatalf("publish: %v", t.Error())
		}
	}
}
