package broker_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// TestPromptConfirmsEarly: with an hour's interval, PromptBacklog readings
// are confirmed at once, in one message covering exactly what arrived, on
// the device's own ack topic.
func TestPromptConfirmsEarly(t *testing.T) {
	b := broker.New(t, broker.Options{})
	acks := make(chan confirm.Message, 10)
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("device-side"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { sub.Disconnect(100) })
	tok := sub.Subscribe("sensors/+/ack", 1, func(_ mqtt.Client, m mqtt.Message) {
		if m.Topic() != confirm.Topic("sensors", "pi-a") {
			t.Errorf("confirmation on %s, want pi-a's ack topic only", m.Topic())
		}
		msg, err := confirm.Decode(m.Payload())
		if err != nil {
			t.Errorf("confirmation %q: %v", m.Payload(), err)
		}
		acks <- msg
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	broker.ConfirmPromptly(t, broker.SubOptions{URL: b.URL()}, time.Hour)

	var topics []string
	var payloads [][]byte
	add := func(dev string, seq uint64) {
		topics = append(topics, "sensors/"+dev+"/sim-1/reading")
		payloads = append(payloads, fmt.Appendf(nil, `{"v":1,"device_id":%q,"seq":%d,"sensor":"sim-1"}`, dev, seq))
	}
	for s := uint64(1); s < broker.PromptBacklog; s++ {
		add("pi-a", s+100)
	}
	add("pi-a", 2000) // the PromptBacklog-th, after a gap
	broker.NewPublisher(t, broker.PubOptions{URL: b.URL()}).PublishEach(t, topics, payloads)

	select {
	case m := <-acks:
		want := []confirm.Range{{First: 101, Last: 99 + broker.PromptBacklog}, {First: 2000, Last: 2000}}
		if !slices.Equal(m.Seqs, want) {
			t.Fatalf("confirmed %v, want %v", m.Seqs, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no early confirmation after PromptBacklog readings")
	}
}
