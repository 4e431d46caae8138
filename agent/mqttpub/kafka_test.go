package mqttpub_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/secret"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// buffered returns the seqs in b, oldest first.
func buffered(t *testing.T, b *buffer.Buffer) []uint64 {
	t.Helper()
	var out []uint64
	if err := b.Each(context.Background(), 0, math.MaxUint64, func(seq uint64, _ []byte) error {
		out = append(out, seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func seqRange(from, to uint64, step uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s += step {
		out = append(out, s)
	}
	return out
}

// TestKafkaDeliveryDeletesOnlyConfirmed: in kafka mode a PUBACK deletes
// nothing; a confirmation deletes exactly what it covers; readings left
// unconfirmed past confirm_timeout are sent again, confirmed ones never;
// the retained status carries the unconfirmed count; nothing is lost.
func TestKafkaDeliveryDeletesOnlyConfirmed(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	fwd := broker.NewConfirmer(t, br.URL())
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	appendN(t, b, 200)
	r := start(t, b, mqttpub.Options{URL: br.URL(), Delivery: mqttpub.DeliveryKafka,
		ConfirmTimeout: 1500 * time.Millisecond, StatusInterval: 100 * time.Millisecond})

	cnt.WaitAll(t, device, f+200, 10*time.Second)
	fwd.Confirm(t, device, seqRange(f+2, f+200, 2)...) // the even seqs reach Kafka
	testkit.WaitFor(t, "the confirmed readings to be deleted", 5*time.Second, func() bool { return len(buffered(t, b)) == 100 })
	for _, s := range buffered(t, b) {
		if (s-f)%2 == 0 {
			t.Fatalf("confirmed seq %d is still buffered", s)
		}
	}
	if d := r.p.Delivery(); d.Unconfirmed != 100 || d.Mode != mqttpub.DeliveryKafka {
		t.Fatalf("Delivery() = %+v, want 100 unconfirmed", d)
	}
	testkit.WaitFor(t, "the status to carry the unconfirmed count", 5*time.Second, func() bool {
		st := statusOf(t, br.Retained("sensors/"+device+"/status"))
		return st.State == "online" && st.Buffer != nil && st.Buffer.Unconfirmed == 100
	})
	// The odd ones are sent again once confirm_timeout has passed.
	testkit.WaitFor(t, "the unconfirmed readings to be sent again", 10*time.Second, func() bool {
		for s := f + 1; s <= f+200; s += 2 {
			if cnt.Count(device, s) < 2 {
				return false
			}
		}
		return true
	})
	if got := r.resent.Get(); got < 100 {
		t.Errorf("resent metric = %v, want >= 100", got)
	}
	for s := f + 2; s <= f+200; s += 2 {
		if n := cnt.Count(device, s); n != 1 {
			t.Fatalf("confirmed seq %d was published %d times", s, n)
		}
	}
	fwd.Confirm(t, device, seqRange(f+1, f+199, 2)...)
	waitEmpty(t, b, 5*time.Second)
	testkit.WaitFor(t, "delivered_total to reach 200", 5*time.Second, func() bool { return r.delivered.Get() == 200 })
	if got := r.confirmed.Get(); got != 200 {
		t.Errorf("confirmed metric = %v, want 200", got)
	}
	if rep := cnt.Report(device); rep.MissingCount != 0 || len(rep.Bad) > 0 {
		t.Fatalf("report %+v", rep)
	}
	r.stop(t)
	if st := statusOf(t, br.Retained("sensors/"+device+"/status")); st.State != "offline" || st.Buffer == nil || st.Buffer.Unconfirmed != 0 {
		t.Errorf("status after a clean stop = %+v, want offline with 0 unconfirmed", st)
	}
}

// TestKafkaDeliveryCap: at max_unconfirmed nothing new is published and the
// readings wait in the buffer; each confirmation lets as many new ones go.
func TestKafkaDeliveryCap(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	fwd := broker.NewConfirmer(t, br.URL())
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	appendN(t, b, 300)
	r := start(t, b, mqttpub.Options{URL: br.URL(), Delivery: mqttpub.DeliveryKafka, MaxUnconfirmed: 50, Window: 20})

	cnt.WaitAll(t, device, f+50, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if n := cnt.Unique(device); n != 50 {
		t.Fatalf("%d readings published with max_unconfirmed 50", n)
	}
	if d := r.p.Delivery(); d.Unconfirmed != 50 {
		t.Fatalf("Delivery() = %+v", d)
	}
	if err := r.p.Stalled(); err != nil {
		t.Fatalf("waiting at the cap counts as a stall: %v", err)
	}
	fwd.Confirm(t, device, seqRange(f+1, f+30, 1)...)
	cnt.WaitAll(t, device, f+80, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := cnt.Unique(device); n != 80 {
		t.Fatalf("%d readings published after 30 confirmed at the cap of 50; want 80", n)
	}
	fwd.Auto(t, cnt, device, 50*time.Millisecond)
	waitEmpty(t, b, 20*time.Second)
	if rep := cnt.Report(device); rep.MissingCount != 0 || rep.Unique != 300 || rep.Duplicates != 0 {
		t.Fatalf("report %+v; want 300 readings, none twice", rep)
	}
}

// TestKafkaJunkOnAckTopic: malformed confirmations and confirmations of
// seqs the device never sent are counted and change nothing.
func TestKafkaJunkOnAckTopic(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	fwd := broker.NewConfirmer(t, br.URL())
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	appendN(t, b, 100)
	var logs testkit.LogBuffer
	r := start(t, b, mqttpub.Options{URL: br.URL(), Delivery: mqttpub.DeliveryKafka, Logger: logs.Logger()})
	cnt.WaitAll(t, device, f+100, 10*time.Second)

	junk := []string{
		``, `null`, `{}`, `not json`, `{"v":2,"seqs":[[1,100]]}`, `{"v":1,"seqs":[[50,60],[1,10]]}`,
		`{"v":1,"seqs":[[0,100]]}`, `{"v":1,"seqs":[[1,100]]} trailing`, `{"v":1,"seqs":[[1,2,3]]}`,
		`{"v":1,"seqs":[[10,1]]}`, `{"v":1,"seqs":[[1,9007199254740993]]}`,
	}
	for _, j := range junk {
		fwd.Raw(t, device, []byte(j))
	}
	fwd.Confirm(t, device, f+1000, f+1001, f+1002) // never sent
	testkit.WaitFor(t, "the junk to be counted", 5*time.Second, func() bool {
		return r.bad.With("malformed").Get() == uint64(len(junk)) &&
			r.bad.With("unsent").Get() == 1
	})
	if n := len(buffered(t, b)); n != 100 {
		t.Fatalf("junk deleted readings: %d left of 100", n)
	}
	if !r.p.Connected() {
		t.Fatal("junk on the ack topic broke the connection")
	}
	out := logs.String()
	if !strings.Contains(out, "ignored a confirmation") {
		t.Errorf("no log line for the junk:\n%s", out)
	}
	if n := strings.Count(out, "ignored a confirmation"); n > 1 {
		t.Errorf("%d log lines for the junk within a minute; want 1 (rate-limited)", n)
	}
	fwd.Confirm(t, device, seqRange(f+1, f+100, 1)...)
	waitEmpty(t, b, 5*time.Second)
}

// TestKafkaRestartSendsUnconfirmedAgain: after a restart everything in the
// buffer counts as unconfirmed and is sent again; confirmations of the
// earlier run's seqs that arrive meanwhile are not "bad".
func TestKafkaRestartSendsUnconfirmedAgain(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	fwd := broker.NewConfirmer(t, br.URL())
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	appendN(t, b, 100)
	r1 := start(t, b, mqttpub.Options{URL: br.URL(), Delivery: mqttpub.DeliveryKafka})
	cnt.WaitAll(t, device, f+100, 10*time.Second)
	r1.stop(t)

	r2 := start(t, b, mqttpub.Options{URL: br.URL(), Delivery: mqttpub.DeliveryKafka, PriorSeq: f + 100})
	testkit.WaitFor(t, "every reading to be sent again", 10*time.Second, func() bool {
		for s := f + 1; s <= f+100; s++ {
			if cnt.Count(device, s) < 2 {
				return false
			}
		}
		return true
	})
	fwd.Confirm(t, device, seqRange(f+1, f+100, 1)...)
	waitEmpty(t, b, 5*time.Second)
	if got := r2.bad.With("unsent").Get(); got != 0 {
		t.Errorf("%v confirmations counted as unsent", got)
	}
}

// TestKafkaSubscribeRefused: a broker that does not let the device read
// its ack topic is a connect failure with a hint, retried with backoff;
// nothing is published (it could never be confirmed).
func TestKafkaSubscribeRefused(t *testing.T) {
	br := broker.New(t, broker.Options{Users: map[string]string{device: "pw", "counter": "c"}, DenySubscribe: []string{device}})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL(), Username: "counter", Password: "c"})
	b := openBuffer(t)
	appendN(t, b, 10)
	var logs testkit.LogBuffer
	r := start(t, b, mqttpub.Options{URL: br.URL(), Username: device, Password: secret.Secret("pw"), Delivery: mqttpub.DeliveryKafka, Logger: logs.Logger()})
	testkit.WaitFor(t, "a few connect attempts", 5*time.Second, func() bool { return r.connErrs.Get() >= 2 })
	if out := logs.String(); !strings.Contains(out, "subscribe to its ack topic sensors/"+device+"/ack") {
		t.Fatalf("no hint about the ack topic permission:\n%s", out)
	}
	if n := cnt.Unique(device); n != 0 {
		t.Fatalf("%d readings published without a confirmation subscription", n)
	}
}

// TestKafkaStopWaitsForConfirmations: on shutdown the publisher gives the
// forwarder a moment (FlushTimeout) to confirm what it just published, so
// a restart or an upgrade does not send it all again.
func TestKafkaStopWaitsForConfirmations(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	r := start(t, b, mqttpub.Options{URL: br.URL(), Delivery: mqttpub.DeliveryKafka, FlushTimeout: 2 * time.Second})
	appendN(t, b, 200)
	cnt.WaitAll(t, device, f+200, 10*time.Second)
	broker.NewConfirmer(t, br.URL()).Auto(t, cnt, device, 500*time.Millisecond) // confirms within 0.5s
	began := time.Now()
	r.stop(t)
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("stop took %v", d)
	}
	if n := len(buffered(t, b)); n != 0 {
		t.Fatalf("%d readings left unconfirmed at stop; the forwarder confirms within 0.5s", n)
	}
}
