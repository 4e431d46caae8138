package mqttpub_test

import (
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// TestKafkaSignedConfirmations: an agent with keys ignores every
// confirmation that is unsigned or does not verify for it, however much
// it covers: it deletes nothing, counts each by reason, logs once, and
// says in its status that it does not accept unsigned ones. The genuine
// forwarder's signed confirmations then drain it; a second key in the
// keyring (rotation) is accepted too.
func TestKafkaSignedConfirmations(t *testing.T) {
	fwdKey, rotated, stranger := pki.NewConfirmKey(t), pki.NewConfirmKey(t), pki.NewConfirmKey(t)
	_, keys := pki.Keyring(t, fwdKey, rotated)
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	fwd := broker.NewConfirmer(t, br.URL())
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	appendN(t, b, 100)
	var logs testkit.LogBuffer
	r := start(t, b, mqttpub.Options{URL: br.URL(), Delivery: mqttpub.DeliveryKafka, ConfirmKeys: keys,
		Logger: logs.Logger(), StatusInterval: 100 * time.Millisecond})
	cnt.WaitAll(t, device, f+100, 10*time.Second)

	all := []confirm.Range{{First: 1, Last: confirm.MaxSeq}} // every seq this device could ever have
	msg := func(dev string, rs []confirm.Range, edit func(*confirm.Message)) []byte {
		m := confirm.Message{ForwarderID: "not-a-forwarder", Seqs: rs}
		edit(&m)
		return confirm.Append(nil, &m)
	}
	forged := map[string][][]byte{
		"unsigned": {msg(device, all, func(*confirm.Message) {})},
		"bad_signature": {
			// a key nobody gave the agent
			msg(device, all, func(m *confirm.Message) { confirm.Sign(stranger.Signer, device, m) }),
			// the forwarder's key, signed for another device
			msg(device, all, func(m *confirm.Message) { confirm.Sign(fwdKey.Signer, "pi-other", m) }),
			// a genuine signature over one seq, widened to all
			msg(device, []confirm.Range{{First: f + 1, Last: f + 1}}, func(m *confirm.Message) {
				confirm.Sign(fwdKey.Signer, device, m)
				m.Seqs = all
			}),
			// the forwarder's key over the same bytes for another purpose
			msg(device, all, func(m *confirm.Message) {
				m.Sig = fwdKey.Signer.Sign("sensorpipe fleet config v1", confirm.Signed(device, m))
			}),
		},
	}
	for _, ps := range forged {
		for _, p := range ps {
			fwd.Raw(t, device, p)
		}
	}
	testkit.WaitFor(t, "the forged confirmations to be counted", 5*time.Second, func() bool {
		return r.bad.With("unsigned").Get() == 1 && r.bad.With("bad_signature").Get() == 4
	})
	if n := len(buffered(t, b)); n != 100 {
		t.Fatalf("forged confirmations deleted readings: %d left of 100", n)
	}
	if got := r.confirmed.Get(); got != 0 {
		t.Fatalf("confirmed metric = %v after forged confirmations only", got)
	}
	if n := strings.Count(logs.String(), "ignored a confirmation"); n != 1 {
		t.Errorf("%d log lines for 5 forged confirmations within a minute; want 1 (rate-limited)\n%s", n, logs.String())
	}
	if st := statusOf(t, br.Retained("sensors/"+device+"/status")); st.ConfirmUnsigned {
		t.Errorf("status %+v says it accepts unsigned confirmations", st)
	}

	fwd.SignWith(rotated.Signer).Confirm(t, device, seqRange(f+1, f+50, 1)...)
	testkit.WaitFor(t, "the rotated key's confirmation to delete", 5*time.Second, func() bool { return len(buffered(t, b)) == 50 })
	fwd.SignWith(fwdKey.Signer).Auto(t, cnt, device, 50*time.Millisecond)
	waitEmpty(t, b, 10*time.Second)
	if rep := cnt.Report(device); rep.MissingCount != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// TestKafkaWithoutKeysAcceptsSigned: an agent not given keys yet (an old
// config, or mqtt.confirm_unsigned) takes a signing forwarder's
// confirmations as well as unsigned ones, and its status says it accepts
// unsigned ones. This is the middle of a rollout: forwarders sign first.
func TestKafkaWithoutKeysAcceptsSigned(t *testing.T) {
	key := pki.NewConfirmKey(t)
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	unsigned, signing := broker.NewConfirmer(t, br.URL()), broker.NewConfirmer(t, br.URL()).SignWith(key.Signer)
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	appendN(t, b, 100)
	start(t, b, mqttpub.Options{URL: br.URL(), Delivery: mqttpub.DeliveryKafka, StatusInterval: 100 * time.Millisecond})
	cnt.WaitAll(t, device, f+100, 10*time.Second)
	testkit.WaitFor(t, "the status to flag unsigned confirmations", 5*time.Second, func() bool {
		return statusOf(t, br.Retained("sensors/"+device+"/status")).ConfirmUnsigned
	})
	signing.Confirm(t, device, seqRange(f+1, f+50, 1)...)
	testkit.WaitFor(t, "the signed confirmation to delete", 5*time.Second, func() bool { return len(buffered(t, b)) == 50 })
	unsigned.Confirm(t, device, seqRange(f+51, f+100, 1)...)
	waitEmpty(t, b, 5*time.Second)
}
