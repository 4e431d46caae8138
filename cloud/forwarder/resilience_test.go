package forwarder_test

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// TestKafkaOutage cuts every connection to Kafka mid-stream: the forwarder
// must stop acking, keep at most FORWARDER_MAX_IN_FLIGHT messages, report
// not ready, and deliver everything once Kafka is back.
func TestKafkaOutage(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{MaxInflight: 5000})
	k := stack.StartKafka(t, certs)
	env := stack.Env(b, k, certs, "fwd-outage")
	env["FORWARDER_MAX_IN_FLIGHT"] = "150"
	fwd := start(t, env)
	devs := stack.Devices(5)
	pub := stack.NewPublisher(t, b, certs, "pub-outage")

	pub.PublishReadings(t, devs, 1, 100)
	waitMetric(t, fwd.addr, "forwarder_acked_total", 500)

	k.Cut()
	pub.PublishReadings(t, devs, 101, 300) // 1000 messages while Kafka is unreachable
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _ := get(fwd.addr, "/readyz")
		if code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz still 200 during the Kafka outage")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if inFlight := metric(t, fwd.addr, "forwarder_in_flight"); inFlight > 150 || inFlight == 0 {
		t.Fatalf("in flight during outage = %v, want 1..150", inFlight)
	}
	if acked := metric(t, fwd.addr, "forwarder_acked_total"); acked > 500 {
		t.Fatalf("acked %v messages while Kafka was down (only 500 were produced before)", acked)
	}
	if age := metric(t, fwd.addr, "forwarder_oldest_unacked_seconds"); age < 0.5 {
		t.Errorf("forwarder_oldest_unacked_seconds = %v during the outage, want at least the 0.5 s waited", age)
	}

	k.Restore()
	waitReady(t, fwd.addr, 30*time.Second)
	recs := k.ReadN(t, stack.Topic, len(devs)*300, 60*time.Second, 300*time.Millisecond)
	dups := checkReadings(t, recs, devs, 300, "fwd-outage")
	waitMetric(t, fwd.addr, "forwarder_in_flight", 0)
	waitMetric(t, fwd.addr, "forwarder_oldest_unacked_seconds", 0)
	t.Logf("after the outage: %d records, %d duplicates", len(recs), dups)
}

// TestDeadLetters sends payloads that must not stop the stream: each goes to
// the DLQ with an error header and its MQTT topic, and is acked.
func TestDeadLetters(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	env := stack.Env(b, k, certs, "fwd-dlq")
	env["FORWARDER_MAX_IN_FLIGHT_BYTES"] = "262144" // the 1 MiB payloads each take the whole budget, one at a time
	fwd := start(t, env)
	pub := stack.NewPublisher(t, b, certs, "pub-dlq")

	garbage := make([]byte, 512)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	big := bytes.Repeat([]byte("x"), 1<<20)
	bigJSON := append(append([]byte(`{"v":1,"device_id":"d","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":1},"pad":"`),
		bytes.Repeat([]byte("a"), 1<<20)...), `"}`...)
	bad := []struct {
		name    string
		payload []byte
		wantErr string
	}{
		{"malformed json", []byte(`{"v":1,"device_id":`), "unexpected end of JSON"},
		{"missing device_id", []byte(`{"v":1,"seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":1}}`), "missing device_id"},
		{"missing seq", []byte(`{"v":1,"device_id":"d","ts":"2026-11-25T10:15:02Z","values":{"t":1}}`), "missing seq"},
		{"missing ts", []byte(`{"v":1,"device_id":"d","seq":1,"values":{"t":1}}`), "missing ts"},
		{"NaN", []byte(`{"v":1,"device_id":"d","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":NaN}}`), "invalid character"},
		{"infinite", []byte(`{"v":1,"device_id":"d","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":1e999}}`), "not a finite number"},
		{"binary garbage", garbage, "invalid reading"},
		{"1 MiB of x", big, "limit 65536"},
		{"1 MiB JSON", bigJSON, "limit 65536"},
		{"empty", nil, "invalid reading"},
	}
	devs := stack.Devices(2)
	pub.PublishReadings(t, devs, 1, 10)
	for _, c := range bad {
		pub.Publish(t, "sensors/bad-dev/"+strings.ReplaceAll(c.name, " ", "-")+"/reading", c.payload)
	}
	pub.PublishReadings(t, devs, 11, 20)

	recs := k.ReadN(t, stack.Topic, 40, 30*time.Second, 100*time.Millisecond)
	if dups := checkReadings(t, recs, devs, 20, "fwd-dlq"); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	dlq := k.ReadN(t, stack.DLQTopic, len(bad), 30*time.Second, 100*time.Millisecond)
	if len(dlq) != len(bad) {
		t.Fatalf("DLQ has %d records, want %d", len(dlq), len(bad))
	}
	for i, c := range bad {
		r := dlq[i] // one partition: arrival order
		topic := "sensors/bad-dev/" + strings.ReplaceAll(c.name, " ", "-") + "/reading"
		if r.Headers["mqtt_topic"] != topic || r.Headers["forwarder_id"] != "fwd-dlq" {
			t.Errorf("%s: headers %v", c.name, r.Headers)
		}
		if !strings.Contains(r.Headers["error"], c.wantErr) {
			t.Errorf("%s: error header %q, want it to contain %q", c.name, r.Headers["error"], c.wantErr)
		}
		want := c.payload
		if len(want) > 65536 {
			want = want[:65536]
			if r.Headers["original_bytes"] == "" {
				t.Errorf("%s: truncated without original_bytes header", c.name)
			}
		}
		if !bytes.Equal(r.Value, want) {
			t.Errorf("%s: DLQ value is %d bytes, want the original's first %d", c.name, len(r.Value), len(want))
		}
		if _, err := reading.Decode(r.Value); err == nil && len(c.payload) <= 65536 {
			t.Errorf("%s: DLQ value decodes", c.name)
		}
	}
	total := float64(40 + len(bad))
	waitMetric(t, fwd.addr, "forwarder_acked_total", total)
	if got := metric(t, fwd.addr, "forwarder_dlq_total"); got != float64(len(bad)) {
		t.Errorf("forwarder_dlq_total = %v, want %d", got, len(bad))
	}
}

// TestShareGroup runs two forwarders in one share group: every message is
// produced once, both take part, and each confirms what it wrote.
func TestShareGroup(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	var fwds []*running
	for _, id := range []string{"fwd-a", "fwd-b"} {
		env := stack.Env(b, k, certs, id)
		env["FORWARDER_SHARE_GROUP"] = "bridge"
		fwds = append(fwds, start(t, env))
	}
	time.Sleep(200 * time.Millisecond) // both SUBSCRIBEs registered
	devs := stack.Devices(10)
	const n = 60
	pub := stack.NewPublisher(t, b, certs, "pub-share")
	pub.PublishReadings(t, devs, 1, n)

	recs := k.ReadN(t, stack.Topic, len(devs)*n, 30*time.Second, 300*time.Millisecond)
	if dups := checkReadings(t, recs, devs, n, "fwd-a", "fwd-b"); dups != 0 {
		t.Errorf("%d duplicates: a shared subscription must deliver each message to one member", dups)
	}
	by := map[string]int{}
	for _, r := range recs {
		by[r.Headers["forwarder_id"]]++
	}
	for _, id := range []string{"fwd-a", "fwd-b"} {
		if by[id] < len(recs)/10 {
			t.Errorf("%s produced %d of %d records: load not split", id, by[id], len(recs))
		}
	}
	t.Logf("split: %v", by)

	waitConfirmed(t, acks, devs, 1, n, 20*time.Second)
	checkAckShape(t, acks.Acks(), "fwd-a", "fwd-b")
	writer := map[string]string{} // device/seq -> forwarder_id of its record
	for _, r := range recs {
		writer[r.Headers["device_id"]+"/"+r.Headers["seq"]] = r.Headers["forwarder_id"]
	}
	for _, a := range acks.Acks() {
		dev := strings.TrimSuffix(strings.TrimPrefix(a.Topic, "sensors/"), "/ack")
		for _, rg := range a.Msg.Seqs {
			for s := rg.First; s <= rg.Last; s++ {
				if w := writer[dev+"/"+strconv.FormatUint(s, 10)]; w != a.Msg.ForwarderID {
					t.Errorf("%s seq %d confirmed by %s, written by %q", dev, s, a.Msg.ForwarderID, w)
				}
			}
		}
	}
	for _, f := range fwds {
		if err := f.stop(); err != nil {
			t.Error(err)
		}
	}
}
