package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// client is the operator's MQTT connection: clean session, QoS 1.
type client struct {
	c       mqtt.Client
	timeout time.Duration
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func dial(ctx context.Context, e *env, timeout time.Duration) (*client, error) {
	// The shipped broker set-ups (cloud-forwarder broker-auth) bind each
	// login to one client id, its user name: a random one would be refused.
	cid := "fleet-" + randomHex(6)
	if e.Username != "" {
		cid = e.Username
	}
	o := mqtt.NewClientOptions().AddBroker(e.URL).SetClientID(cid).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(timeout).SetOrderMatters(false)
	if e.TLS != nil {
		o.SetTLSConfig(e.TLS)
	}
	if e.Username != "" {
		o.SetUsername(e.Username)
		o.SetPassword(e.Password.Reveal())
	}
	c := &client{c: mqtt.NewClient(o), timeout: timeout}
	if err := c.wait(ctx, c.c.Connect(), "connect to "+e.String()); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *client) close() { c.c.Disconnect(250) }

func (c *client) wait(ctx context.Context, tok mqtt.Token, what string) error {
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%s: no answer in %v", what, c.timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("%s: the broker refused the subscription to %s (check the operator login's permissions)", what, topic)
			}
		}
	}
	return nil
}

// publish sends payload QoS 1 and waits for the PUBACK.
func (c *client) publish(ctx context.Context, topic string, retained bool, payload []byte) error {
	return c.wait(ctx, c.c.Publish(topic, 1, retained, payload), "publish "+topic)
}

// retained subscribes to topics and collects the retained messages that
// arrive within settle after the SUBACK (the broker sends them right
// after it); a topic with none is absent from the result.
func (c *client) retained(ctx context.Context, topics []string, settle time.Duration) (map[string][]byte, error) {
	got := make(chan mqtt.Message, len(topics)*2)
	filters := map[string]byte{}
	for _, t := range topics {
		filters[t] = 1
	}
	if err := c.wait(ctx, c.c.SubscribeMultiple(filters, func(_ mqtt.Client, m mqtt.Message) {
		if m.Retained() {
			select {
			case got <- m:
			default:
			}
		}
	}), "subscribe"); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	t := time.NewTimer(settle)
	defer t.Stop()
	for len(out) < len(topics) {
		select {
		case m := <-got:
			out[m.Topic()] = m.Payload()
		case <-t.C:
			return out, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, nil
}
