package forwarder_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// TestAggregates: an aggregate (a full buffer's downsampled record) is
// validated like any reading and carried to Kafka byte for byte; one whose
// agg part is inconsistent goes to the DLQ with the reason.
func TestAggregates(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	fwd := start(t, stack.Env(b, k, certs, "fwd-agg"))
	pub := stack.NewPublisher(t, b, certs, "pub-agg")

	ts := time.Date(2026, 11, 25, 10, 15, 0, 125e6, time.UTC)
	good := reading.Reading{DeviceID: "agg-dev", Seq: 51007, Sensor: "bme280-0x76", Kind: "bme280", TS: ts, TimeSynced: true,
		Values: map[string]float64{reading.Temperature: 21.4, reading.Humidity: 48.1},
		Agg: &reading.Aggregate{N: 60, Level: 1, To: ts.Add(59 * time.Second), Covers: [2]uint64{48100, 48340},
			Min: map[string]float64{reading.Temperature: 21.1, reading.Humidity: 47.5},
			Max: map[string]float64{reading.Temperature: 21.6, reading.Humidity: 48.5}}}
	payload := reading.Encode(nil, &good)
	enc := string(payload)
	bad := []struct{ name, payload, wantErr string }{
		{"n-zero", strings.Replace(enc, `"n":60`, `"n":0`, 1), "n must be positive"},
		{"mean-above-max", strings.Replace(enc, `"max":{"humidity_pct":48.5`, `"max":{"humidity_pct":48`, 1), "outside min"},
		{"covers-own-seq", strings.Replace(enc, `[48100,48340]`, `[48100,51007]`, 1), "below its own seq"},
		{"to-before-ts", strings.Replace(enc, `"to":"2026-11-25T10:15:59.125Z"`, `"to":"2026-11-25T10:00:00Z"`, 1), "to is before ts"},
	}
	topic := "sensors/agg-dev/bme280-0x76/reading"
	pub.Publish(t, topic, payload)
	for _, c := range bad {
		if c.payload == enc {
			t.Fatalf("%s: test is stale, the payload did not change", c.name)
		}
		pub.Publish(t, topic, []byte(c.payload))
	}
	recs := k.ReadN(t, stack.Topic, 1, 30*time.Second, 300*time.Millisecond)
	if len(recs) != 1 || !bytes.Equal(recs[0].Value, payload) {
		t.Fatalf("Kafka has %d records (%v), want the aggregate unchanged", len(recs), recs)
	}
	r, err := reading.Decode(recs[0].Value)
	if err != nil || r.Agg == nil || r.Agg.N != 60 || r.Agg.Covers != good.Agg.Covers {
		t.Fatalf("the aggregate in Kafka decodes as %+v, %v", r.Agg, err)
	}
	dlq := k.ReadN(t, stack.DLQTopic, len(bad), 30*time.Second, 300*time.Millisecond)
	if len(dlq) != len(bad) {
		t.Fatalf("DLQ has %d records, want %d", len(dlq), len(bad))
	}
	for i, c := range bad {
		if !strings.Contains(dlq[i].Headers["error"], c.wantErr) || string(dlq[i].Value) != c.payload {
			t.Errorf("%s: DLQ error %q (want %q), value kept %v", c.name, dlq[i].Headers["error"], c.wantErr, string(dlq[i].Value) == c.payload)
		}
	}
	waitMetric(t, fwd.addr, "forwarder_acked_total", float64(1+len(bad)))
}
