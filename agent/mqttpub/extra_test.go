package mqttpub_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// TestResendNow: the `resend` fleet command makes every published,
// unconfirmed reading go out again at once, long before confirm_timeout;
// confirmed ones are not sent again.
func TestResendNow(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	fwd := broker.NewConfirmer(t, br.URL())
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	appendN(t, b, 50)
	r := start(t, b, mqttpub.Options{URL: br.URL(), Delivery: mqttpub.DeliveryKafka, ConfirmTimeout: time.Hour})
	cnt.WaitAll(t, device, f+50, 10*time.Second)
	fwd.Confirm(t, device, seqRange(f+1, f+10, 1)...)
	testkit.WaitFor(t, "ten confirmed", 5*time.Second, func() bool { return r.p.Delivery().Unconfirmed == 40 })

	if n := r.p.ResendNow(); n != 40 {
		t.Fatalf("ResendNow = %d, want the 40 unconfirmed", n)
	}
	testkit.WaitFor(t, "the 40 unconfirmed sent again", 10*time.Second, func() bool {
		for s := f + 11; s <= f+50; s++ {
			if cnt.Count(device, s) < 2 {
				return false
			}
		}
		return true
	})
	for s := f + 1; s <= f+10; s++ {
		if n := cnt.Count(device, s); n != 1 {
			t.Fatalf("confirmed seq %d sent %d times", s, n)
		}
	}
}

// TestSubscriptionsAndPublish: the extra subscriptions receive retained
// and live messages on every connection, and Publish goes over the
// session (ErrNotConnected between sessions).
func TestSubscriptionsAndPublish(t *testing.T) {
	br := broker.New(t, broker.Options{})
	op := broker.NewPublisher(t, broker.PubOptions{URL: br.URL(), ClientID: "operator"})
	var mu sync.Mutex
	var got []string
	b := openBuffer(t)
	p, err := mqttpub.New(b, mqttpub.Options{URL: br.URL(), DeviceID: device, Delivery: mqttpub.DeliveryBroker,
		Subscriptions: []mqttpub.Subscription{{Topic: "sensors/" + device + "/cmd", Handle: func(pl []byte) {
			mu.Lock()
			got = append(got, string(pl))
			mu.Unlock()
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), "sensors/"+device+"/result", []byte("x"), false); !errors.Is(err, mqttpub.ErrNotConnected) {
		t.Fatalf("Publish before connecting = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testkit.WaitFor(t, "connected", 10*time.Second, p.Connected)
	testkit.WaitFor(t, "a command received", 10*time.Second, func() bool {
		op.Publish(t, "sensors/"+device+"/cmd", []byte("hello"))
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[0] == "hello"
	})
	if err := p.Publish(ctx, "sensors/"+device+"/result", []byte("answer"), false); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}
