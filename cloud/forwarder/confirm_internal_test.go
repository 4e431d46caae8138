package forwarder

import (
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// doneToken is a finished paho token.
type doneToken struct {
	err  error
	done chan struct{}
}

func newToken(err error, finished bool) *doneToken {
	t := &doneToken{err: err, done: make(chan struct{})}
	if finished {
		close(t.done)
	}
	return t
}
func (t *doneToken) Wait() bool                     { <-t.done; return true }
func (t *doneToken) WaitTimeout(time.Duration) bool { return true }
func (t *doneToken) Done() <-chan struct{}          { return t.done }
func (t *doneToken) Error() error                   { return t.err }

// recorder records what the confirmer publishes; next decides each token.
type recorder struct {
	sent []sent
	next func() *doneToken
}

type sent struct {
	topic string
	msg   confirm.Message
}

func (r *recorder) Publish(topic string, qos byte, retained bool, payload any) mqtt.Token {
	if qos != 1 || retained {
		panic("confirmations are QoS 1, not retained")
	}
	m, err := confirm.Decode(payload.([]byte))
	if err != nil {
		panic(err)
	}
	r.sent = append(r.sent, sent{topic, m})
	if r.next != nil {
		return r.next()
	}
	return newToken(nil, true)
}

func acked(dev string, seqs ...uint64) []*pending {
	var ps []*pending
	for _, s := range seqs {
		ps = append(ps, &pending{ackTo: []byte("sensors/" + dev), seq: s})
	}
	return ps
}

func seqRange(a, b uint64) []uint64 {
	var out []uint64
	for s := a; s <= b; s++ {
		out = append(out, s)
	}
	return out
}

// TestConfirmerSchedule drives the confirmer with a fake clock: the first
// confirmation of a device goes at once, later ones at most once per
// interval with everything in between coalesced; a failed publish gives
// its seqs back; final sends what is left regardless of the interval.
func TestConfirmerSchedule(t *testing.T) {
	const iv = time.Second
	c := newConfirmer("fwd-t", nil, iv, slog.New(slog.DiscardHandler), newMetrics(func() float64 { return 0 }, func() float64 { return 0 }))
	pub := &recorder{}
	t0 := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	expect := func(step string, want ...sent) {
		t.Helper()
		if !slices.EqualFunc(pub.sent, want, func(a, b sent) bool {
			return a.topic == b.topic && a.msg.ForwarderID == b.msg.ForwarderID && slices.Equal(a.msg.Seqs, b.msg.Seqs)
		}) {
			t.Fatalf("%s: published %+v, want %+v", step, pub.sent, want)
		}
		pub.sent = nil
	}
	msg := func(dev string, rs ...confirm.Range) sent {
		return sent{"sensors/" + dev + "/ack", confirm.Message{ForwarderID: "fwd-t", Seqs: rs}}
	}

	c.add(acked("a", 1, 2, 3))
	if next := c.flush(at(0), pub, true, false); next != confirmPoll {
		t.Errorf("next wake-up %v after a publish, want the token poll %v", next, confirmPoll)
	}
	expect("first", msg("a", confirm.Range{First: 1, Last: 3}))

	c.add(acked("a", 4, 5, 7))
	c.add(acked("b", 10))
	next := c.flush(at(100*time.Millisecond), pub, true, false)
	expect("b is new, a waits", msg("b", confirm.Range{First: 10, Last: 10}))
	if next != confirmPoll { // b's token is settled on the next run; a is due in 900ms
		t.Errorf("next = %v", next)
	}
	if next = c.flush(at(200*time.Millisecond), pub, true, false); next != 800*time.Millisecond {
		t.Errorf("next = %v, want a's due time in 800ms", next)
	}
	expect("nothing due")
	c.add(acked("a", 6, 8))
	c.flush(at(999*time.Millisecond), pub, true, false)
	expect("1ms early")
	c.flush(at(time.Second), pub, true, false)
	expect("a due", msg("a", confirm.Range{First: 4, Last: 8}))

	// MQTT down: nothing goes, and nothing is lost.
	c.add(acked("a", seqRange(9, 20)...))
	c.flush(at(3*time.Second), pub, false, false)
	expect("disconnected")
	// The broker takes the message but the publish fails: the seqs come back.
	pub.next = func() *doneToken { return newToken(errors.New("connection lost"), true) }
	c.flush(at(4*time.Second), pub, true, false)
	expect("failing publish", msg("a", confirm.Range{First: 9, Last: 20}))
	pub.next = nil
	c.add(acked("a", 22))
	c.flush(at(4500*time.Millisecond), pub, true, false) // settles the failure; a sent at 4s, due at 5s
	expect("settled")
	c.flush(at(5*time.Second), pub, true, false)
	expect("re-sent", msg("a", confirm.Range{First: 9, Last: 20}, confirm.Range{First: 22, Last: 22}))

	// A publish with no PUBACK blocks the device's next one until the timeout.
	stuck := newToken(nil, false)
	pub.next = func() *doneToken { return stuck }
	c.add(acked("a", 30))
	c.flush(at(6*time.Second), pub, true, false)
	expect("stuck publish", msg("a", confirm.Range{First: 30, Last: 30}))
	pub.next = nil
	c.add(acked("a", 31))
	c.flush(at(8*time.Second), pub, true, false)
	expect("waits for the outstanding one")
	c.flush(at(6*time.Second+confirmTimeout), pub, true, false)
	expect("timed out: sent again with the new seq", msg("a", confirm.Range{First: 30, Last: 31}))

	// A device with more ranges than one message holds gets them over several intervals.
	var many []uint64
	for i := range uint64(maxRanges + 10) {
		many = append(many, 1000+2*i)
	}
	c.add(acked("c", many...))
	c.flush(at(40*time.Second), pub, true, false)
	if len(pub.sent) != 1 || len(pub.sent[0].msg.Seqs) != maxRanges || len(confirm.Append(nil, &pub.sent[0].msg)) > confirm.MaxPayload {
		t.Fatalf("a full confirmation: %d messages", len(pub.sent))
	}
	pub.sent = nil
	c.flush(at(40*time.Second+iv), pub, true, false)
	if len(pub.sent) != 1 || len(pub.sent[0].msg.Seqs) != 10 {
		t.Fatalf("the rest: %+v", pub.sent)
	}
	pub.sent = nil

	// final ignores the interval.
	c.add(acked("a", 40))
	c.add(acked("b", 11))
	c.final(pub, true, 0)
	slices.SortFunc(pub.sent, func(x, y sent) int { return map[bool]int{true: -1, false: 1}[x.topic < y.topic] })
	expect("final", msg("a", confirm.Range{First: 40, Last: 40}), msg("b", confirm.Range{First: 11, Last: 11}))
	if got := c.pendingDevices(); got != 0 {
		t.Errorf("pendingDevices = %v after final", got)
	}
}

// TestConfirmerBacklog: a device draining a backlog is confirmed every
// backlogConfirm seqs, without waiting for the interval; one at its usual
// rate still waits.
func TestConfirmerBacklog(t *testing.T) {
	c := newConfirmer("fwd-t", nil, time.Second, slog.New(slog.DiscardHandler), newMetrics(func() float64 { return 0 }, func() float64 { return 0 }))
	pub := &recorder{}
	t0 := time.Unix(1_800_000_000, 0)
	c.add(acked("a", 1))
	c.add(acked("b", 1))
	c.flush(t0, pub, true, false)
	if len(pub.sent) != 2 {
		t.Fatalf("first confirmations: %d messages, want 2", len(pub.sent))
	}
	pub.sent = nil
	c.add(acked("a", seqRange(2, backlogConfirm)...)) // one short of the threshold
	c.add(acked("b", 2, 3))
	c.flush(t0.Add(10*time.Millisecond), pub, true, false)
	if len(pub.sent) != 0 {
		t.Fatalf("%d seqs pending: published %+v before the interval", backlogConfirm-1, pub.sent)
	}
	c.add(acked("a", backlogConfirm+1))
	c.flush(t0.Add(20*time.Millisecond), pub, true, false)
	want := []confirm.Range{{First: 2, Last: backlogConfirm + 1}}
	if len(pub.sent) != 1 || pub.sent[0].topic != "sensors/a/ack" || !slices.Equal(pub.sent[0].msg.Seqs, want) {
		t.Fatalf("at %d pending: published %+v, want one message to a with %v", backlogConfirm, pub.sent, want)
	}
	pub.sent = nil
	c.flush(t0.Add(999*time.Millisecond), pub, true, false)
	if len(pub.sent) != 0 {
		t.Fatalf("b with 2 pending went before its interval: %+v", pub.sent)
	}
	c.flush(t0.Add(time.Second), pub, true, false)
	if len(pub.sent) != 1 || pub.sent[0].topic != "sensors/b/ack" {
		t.Fatalf("b at its interval: published %+v", pub.sent)
	}
}

// TestConfirmerWaitsForEnough: after a device's first confirmation, a
// message waits for minConfirm seqs, or for maxConfirmWait when the device
// is slow, so several replicas sharing a device's readings do not each send
// a message per interval for one or two readings.
func TestConfirmerWaitsForEnough(t *testing.T) {
	c := newConfirmer("fwd-t", nil, time.Second, slog.New(slog.DiscardHandler), newMetrics(func() float64 { return 0 }, func() float64 { return 0 }))
	pub := &recorder{}
	t0 := time.Now() // add stamps the first pending seq with the real clock
	c.add(acked("a", 1))
	c.flush(t0, pub, true, false)
	if len(pub.sent) != 1 {
		t.Fatalf("first confirmation: %d messages, want 1 at once", len(pub.sent))
	}
	pub.sent = nil
	c.add(acked("a", 2, 3))
	if next := c.flush(t0.Add(2*time.Second), pub, true, false); len(pub.sent) != 0 {
		t.Fatalf("2 seqs after 2s: published %+v, want a wait", pub.sent)
	} else if next <= 0 || next > maxConfirmWait {
		t.Fatalf("next wake-up %v, want within maxConfirmWait", next)
	}
	c.add(acked("a", 4, 5))
	c.flush(t0.Add(2100*time.Millisecond), pub, true, false)
	if want := []confirm.Range{{First: 2, Last: 5}}; len(pub.sent) != 1 || !slices.Equal(pub.sent[0].msg.Seqs, want) {
		t.Fatalf("%d seqs pending past the interval: published %+v, want %v", minConfirm, pub.sent, want)
	}
	pub.sent = nil
	c.flush(t0.Add(2200*time.Millisecond), pub, true, false) // settles the publish
	c.add(acked("a", 6))
	c.flush(t0.Add(5*time.Second), pub, true, false)
	if len(pub.sent) != 0 {
		t.Fatalf("1 seq after 3s: published %+v, want a wait", pub.sent)
	}
	c.flush(time.Now().Add(maxConfirmWait), pub, true, false)
	if want := []confirm.Range{{First: 6, Last: 6}}; len(pub.sent) != 1 || !slices.Equal(pub.sent[0].msg.Seqs, want) {
		t.Fatalf("1 seq after maxConfirmWait: published %+v, want %v", pub.sent, want)
	}
}

// TestConfirmerSigns: with a key, every confirmation is signed for the
// device its topic names, whatever levels the prefix has, and verifies
// only for that device.
func TestConfirmerSigns(t *testing.T) {
	key, err := sign.LoadSigner("../config/testdata/confirm.key")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sign.LoadVerifier("../config/testdata/confirm.pub")
	if err != nil {
		t.Fatal(err)
	}
	c := newConfirmer("fwd-t", key, time.Second, slog.New(slog.DiscardHandler), newMetrics(func() float64 { return 0 }, func() float64 { return 0 }))
	c.add([]*pending{{ackTo: []byte("site/a/sensors/pi-1"), seq: 7}, {ackTo: []byte("sensors/pi-2"), seq: 9}})
	var r recorder
	c.flush(time.Now(), &r, true, true)
	if len(r.sent) != 2 {
		t.Fatalf("sent %d confirmations, want 2", len(r.sent))
	}
	for _, s := range r.sent {
		dev := lastLevel(s.topic[:len(s.topic)-len("/ack")])
		if err := confirm.Verify(pub, dev, &s.msg); err != nil {
			t.Errorf("%s: %v", s.topic, err)
		}
		other := map[string]string{"pi-1": "pi-2", "pi-2": "pi-1"}[dev]
		if err := confirm.Verify(pub, other, &s.msg); !errors.Is(err, sign.ErrBadSignature) {
			t.Errorf("%s verified for %s: %v", s.topic, other, err)
		}
	}
}

// TestConfirmerWakesAtMinConfirm: when the minConfirm-th seq arrives
// after a device's first confirmation, run is woken to publish one
// interval after the last; without the wake-up it slept until
// maxConfirmWait after the first seq, and a 50 readings/s device got a
// confirmation every 10 s.
func TestConfirmerWakesAtMinConfirm(t *testing.T) {
	c := newConfirmer("fwd-t", nil, time.Second, slog.New(slog.DiscardHandler), newMetrics(func() float64 { return 0 }, func() float64 { return 0 }))
	kicked := func() bool {
		select {
		case <-c.kick:
			return true
		default:
			return false
		}
	}
	var r recorder
	now := time.Now()
	c.add(acked("pi-1", 1))
	if !kicked() {
		t.Fatal("a device's first seq did not wake run")
	}
	c.flush(now, &r, true, false)
	c.add(acked("pi-1", 2))
	if !kicked() {
		t.Fatal("the first seq after a confirmation did not wake run")
	}
	if next := c.flush(now.Add(time.Millisecond), &r, true, false); next < maxConfirmWait-time.Second || len(r.sent) != 1 {
		t.Fatalf("one seq waiting: next flush in %v, %d sent; want about maxConfirmWait, 1", next, len(r.sent))
	}
	for s := uint64(3); s < 1+minConfirm; s++ {
		c.add(acked("pi-1", s))
		if kicked() {
			t.Fatalf("seq %d woke run before minConfirm", s)
		}
	}
	c.add(acked("pi-1", 1+minConfirm))
	if !kicked() {
		t.Fatalf("%d seqs waiting did not wake run: they would wait maxConfirmWait", minConfirm)
	}
	if next := c.flush(now.Add(2*time.Millisecond), &r, true, false); next > time.Second {
		t.Fatalf("with %d seqs waiting the next flush is in %v, want within the interval", minConfirm, next)
	}
	c.flush(now.Add(time.Second), &r, true, false)
	if len(r.sent) != 2 || !slices.Equal(r.sent[1].msg.Seqs, []confirm.Range{{First: 2, Last: 1 + minConfirm}}) {
		t.Fatalf("sent %+v", r.sent)
	}
}
