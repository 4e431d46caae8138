package forwarder_test

import (
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// TestSpoofedDevice: pi-A publishes on its own topic readings that claim to
// be pi-B's (pre-sending pi-B's future seqs, so de-duplication would drop
// pi-B's real ones) and a reading naming another sensor than its topic's.
// They land in the DLQ with a clear error, are confirmed to pi-A (whose
// topic they came on) and never to pi-B, and nothing appears as pi-B on the
// main topic but pi-B's own readings.
func TestSpoofedDevice(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	env := stack.Env(b, k, certs, "fwd-spoof")
	env["FORWARDER_CONFIRM_INTERVAL"] = "100ms"
	fwd := start(t, env)
	pub := stack.NewPublisher(t, b, certs, "pub-spoof")

	const spoofs = 10
	for s := uint64(1); s <= spoofs; s++ {
		r := stack.Reading("pi-B", 100+s) // pi-B's future seqs
		pub.Publish(t, "sensors/pi-A/sim-1/reading", reading.Encode(nil, r))
	}
	wrongSensor := stack.Reading("pi-A", 50)
	pub.Publish(t, "sensors/pi-A/other-sensor/reading", reading.Encode(nil, wrongSensor))
	pub.PublishReadings(t, []string{"pi-A", "pi-B"}, 1, 110)

	recs := k.ReadN(t, stack.Topic, 220, 30*time.Second, 300*time.Millisecond)
	if dups := checkReadings(t, recs, []string{"pi-A", "pi-B"}, 110, "fwd-spoof"); dups != 0 {
		t.Errorf("%d duplicates: the spoofed readings reached the main topic", dups)
	}
	for _, r := range recs {
		if r.Key == "pi-B" && r.Headers["mqtt_topic"] != "sensors/pi-B/sim-1/reading" {
			t.Errorf("a pi-B record came from %s", r.Headers["mqtt_topic"])
		}
	}
	dlq := k.ReadN(t, stack.DLQTopic, spoofs+1, 30*time.Second, 300*time.Millisecond)
	if len(dlq) != spoofs+1 {
		t.Fatalf("DLQ has %d records, want %d", len(dlq), spoofs+1)
	}
	for i, r := range dlq[:spoofs] {
		want := `reading does not match its topic: device_id "pi-B" differs from the topic's device "pi-A"`
		if r.Headers["error"] != want || r.Headers["mqtt_topic"] != "sensors/pi-A/sim-1/reading" {
			t.Errorf("spoof %d: headers %v, want error %q", i, r.Headers, want)
		}
	}
	if e := dlq[spoofs].Headers["error"]; !strings.Contains(e, `sensor "sim-1" differs from the topic's sensor "other-sensor"`) {
		t.Errorf("wrong sensor: error %q", e)
	}
	waitMetric(t, fwd.addr, "forwarder_acked_total", 220+spoofs+1)
	waitConfirmed(t, acks, []string{"pi-A", "pi-B"}, 1, 110, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // three intervals: any stray confirmation would be here
	for s, n := range acks.Confirmed(ackTopic("pi-B")) {
		if s > 110 || n != 1 {
			t.Errorf("pi-B confirmed seq %d %d times; it published 1..110 once", s, n)
		}
	}
}
