package forwarder_test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	kit "github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// refuseWhen makes kfake answer key's partition of topic with code in
// every produce request whose batch for that partition matches, as a
// broker refusing a record does: the whole batch is refused, the other
// partitions of the request are judged on their own.
func refuseWhen(tb testing.TB, k *kafka.Cluster, topic, key string, code *kerr.Error, count int, match func(batch kmsg.RecordBatch, raw []byte) bool) *kfake.FaultHandle {
	return refusePartition(tb, k, topic, int32(kafka.Partition(key, stack.Partitions)), code, count, match)
}

// refusePartition is refuseWhen for partition part of topic.
func refusePartition(tb testing.TB, k *kafka.Cluster, topic string, part int32, code *kerr.Error, count int, match func(batch kmsg.RecordBatch, raw []byte) bool) *kfake.FaultHandle {
	id := k.TopicID(tb, topic)
	return k.Cluster.Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{part}, Err: code, Count: count,
		When: func(req kmsg.Request) bool {
			for _, t := range req.(*kmsg.ProduceRequest).Topics {
				if t.Topic != topic && t.TopicID != id { // not a DLQ batch with the poison beside a clean one of part
					continue
				}
				for _, p := range t.Partitions {
					var b kmsg.RecordBatch
					if p.Partition == part && b.ReadFrom(p.Records) == nil && match(b, p.Records) {
						return true
					}
				}
			}
			return false
		},
	})
}

// poison is a reading from dev whose bytes contain dev, to be matched.
func poison(dev string) []byte { return reading.Encode(nil, stack.Reading(dev, 1)) }

// TestRefusedRecordsGoToDLQ: records Kafka refuses for good (too large,
// invalid timestamp, corrupt, invalid) each go to the DLQ with the error,
// are acked and confirmed, and the stream around them goes on; a
// retriable refusal is retried and lands on the main topic.
func TestRefusedRecordsGoToDLQ(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	codes := map[string]*kerr.Error{
		"pi-poison-size": kerr.MessageTooLarge,
		"pi-poison-ts":   kerr.InvalidTimestamp,
		"pi-poison-crc":  kerr.CorruptMessage,
		"pi-poison-rec":  kerr.InvalidRecord,
	}
	for dev, code := range codes {
		refuseWhen(t, k, stack.Topic, dev, code, -1, func(_ kmsg.RecordBatch, raw []byte) bool { return bytes.Contains(raw, []byte(dev)) })
	}
	flaky := refuseWhen(t, k, stack.Topic, "pi-flaky", kerr.NotEnoughReplicas, 5, func(_ kmsg.RecordBatch, raw []byte) bool {
		return bytes.Contains(raw, []byte("pi-flaky"))
	})
	env := stack.Env(b, k, certs, "fwd-refused")
	env["KAFKA_COMPRESSION"] = "none" // the faults look for the device id in the raw batch
	env["FORWARDER_CONFIRM_INTERVAL"] = "100ms"
	fwd := start(t, env)
	pub := stack.NewPublisher(t, b, certs, "pub-refused")

	devs := stack.Devices(4)
	const n = 60
	pub.PublishReadings(t, devs, 1, 20)
	for dev := range codes {
		pub.Publish(t, stack.ReadingTopic(dev), poison(dev))
	}
	pub.Publish(t, stack.ReadingTopic("pi-flaky"), poison("pi-flaky"))
	pub.PublishReadings(t, devs, 21, n)

	recs := k.ReadN(t, stack.Topic, len(devs)*n+1, 30*time.Second, 300*time.Millisecond)
	var main []kafka.Record
	flakyIn := 0
	for _, r := range recs {
		switch {
		case r.Key == "pi-flaky":
			flakyIn++
		case codes[r.Key] != nil:
			t.Errorf("refused record of %s on the main topic", r.Key)
		default:
			main = append(main, r)
		}
	}
	if dups := checkReadings(t, main, devs, n, "fwd-refused"); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	if flakyIn != 1 || flaky.Hits() < 1 {
		t.Errorf("retriable refusal: %d records on the main topic after %d refusals, want 1 after 1 or more", flakyIn, flaky.Hits())
	}
	dlq := k.ReadN(t, stack.DLQTopic, len(codes), 30*time.Second, 300*time.Millisecond)
	if len(dlq) != len(codes) {
		t.Fatalf("DLQ has %d records, want %d", len(dlq), len(codes))
	}
	for _, r := range dlq {
		topic := r.Headers["mqtt_topic"]
		dev := strings.Split(topic, "/")[1]
		code := codes[dev]
		if code == nil {
			t.Errorf("unexpected DLQ record from %s", topic)
			continue
		}
		want := "kafka refused the record: " + code.Message
		if !strings.HasPrefix(r.Headers["error"], want) || r.Headers["forwarder_id"] != "fwd-refused" {
			t.Errorf("%s: headers %v, want error starting %q", dev, r.Headers, want)
		}
		if !bytes.Equal(r.Value, poison(dev)) {
			t.Errorf("%s: DLQ value %q is not the reading", dev, r.Value)
		}
	}
	total := float64(len(devs)*n + len(codes) + 1)
	waitMetric(t, fwd.addr, "forwarder_acked_total", total)
	waitMetric(t, fwd.addr, "forwarder_in_flight", 0)
	waitMetric(t, fwd.addr, "forwarder_oldest_unacked_seconds", 0)
	if got := metric(t, fwd.addr, "forwarder_refused_total"); got != float64(len(codes)) {
		t.Errorf("forwarder_refused_total = %v, want %d", got, len(codes))
	}
	for dev := range codes {
		waitConfirmed(t, acks, []string{dev}, 1, 1, 10*time.Second) // dead-lettered is delivered
	}
	waitConfirmed(t, acks, append(devs, "pi-flaky"), 1, 1, 10*time.Second)
	waitConfirmed(t, acks, devs, 1, n, 10*time.Second)
}

// TestRefusedTooLargeForTopic: a reading over the topic's max.message.bytes
// (a real size check, not an injected error) lands in the DLQ while the
// readings before and after it are acked.
func TestRefusedTooLargeForTopic(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	const topic = "small-records"
	if err := k.Cluster.CreateTopic(topic, stack.Partitions, map[string]string{"max.message.bytes": "16384"}); err != nil {
		t.Fatal(err)
	}
	if err := k.Cluster.CreateTopic(topic+".dlq", 1, nil); err != nil {
		t.Fatal(err)
	}
	env := stack.Env(b, k, certs, "fwd-toolarge")
	env["KAFKA_TOPIC"] = topic
	env["KAFKA_COMPRESSION"] = "none"
	fwd := start(t, env)
	pub := stack.NewPublisher(t, b, certs, "pub-toolarge")

	big := stack.Reading("pi-big", 1)
	for i := range 1500 {
		big.Values["v"+strconv.Itoa(i)] = float64(i) + 0.123456
	}
	payload := reading.Encode(nil, big)
	if len(payload) < 20000 || len(payload) > reading.MaxPayload {
		t.Fatalf("big reading is %d bytes", len(payload))
	}
	devs := stack.Devices(4)
	const n = 40
	pub.PublishReadings(t, devs, 1, n/2)
	pub.Publish(t, stack.ReadingTopic("pi-big"), payload)
	pub.PublishReadings(t, devs, n/2+1, n)

	recs := k.ReadN(t, topic, len(devs)*n, 30*time.Second, 300*time.Millisecond)
	for _, r := range recs {
		if r.Key == "pi-big" {
			t.Fatal("the oversized reading reached the main topic")
		}
	}
	checkReadings(t, recs, devs, n, "fwd-toolarge")
	dlq := k.ReadN(t, topic+".dlq", 1, 30*time.Second, 200*time.Millisecond)
	if len(dlq) != 1 || !bytes.Equal(dlq[0].Value, payload) || !strings.Contains(dlq[0].Headers["error"], "MESSAGE_TOO_LARGE") {
		t.Fatalf("DLQ: %d records, want the oversized reading with a MESSAGE_TOO_LARGE error", len(dlq))
	}
	waitMetric(t, fwd.addr, "forwarder_acked_total", float64(len(devs)*n+1))
}

// TestClockSkew: a reading stamped further ahead than
// FORWARDER_MAX_CLOCK_SKEW goes to the DLQ before Kafka sees it; with a
// larger skew allowed, Kafka's own refusal (as Kafka 4.0 refuses record
// times over 1h ahead) sends it there too.
func TestClockSkew(t *testing.T) {
	for _, tt := range []struct {
		name, skew, wantErr string
		kafkaHits           bool
	}{
		{"forwarder refuses", "", "ahead of the forwarder's clock, more than FORWARDER_MAX_CLOCK_SKEW=1h0m0s", false},
		{"kafka refuses", "1000h", "kafka refused the record: INVALID_TIMESTAMP", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			certs := pki.New(t)
			b := stack.StartBroker(t, certs, stack.BrokerOptions{})
			k := stack.StartKafka(t, certs)
			limit := time.Now().Add(time.Hour).UnixMilli()
			refusals := refuseWhen(t, k, stack.Topic, "pi-future", kerr.InvalidTimestamp, -1, func(b kmsg.RecordBatch, _ []byte) bool {
				return b.MaxTimestamp > limit
			})
			env := stack.Env(b, k, certs, "fwd-skew")
			if tt.skew != "" {
				env["FORWARDER_MAX_CLOCK_SKEW"] = tt.skew
			}
			fwd := start(t, env)
			pub := stack.NewPublisher(t, b, certs, "pub-skew")
			devs := stack.Devices(2)
			pub.PublishReadings(t, devs, 1, 10)
			future := stack.Reading("pi-future", 1)
			future.TS = time.Now().Add(2 * time.Hour).Truncate(time.Millisecond).UTC()
			pub.Publish(t, stack.ReadingTopic("pi-future"), reading.Encode(nil, future))
			pub.PublishReadings(t, devs, 11, 20)

			recs := k.ReadN(t, stack.Topic, len(devs)*20, 30*time.Second, 300*time.Millisecond)
			checkReadings(t, recs, devs, 20, "fwd-skew")
			dlq := k.ReadN(t, stack.DLQTopic, 1, 30*time.Second, 200*time.Millisecond)
			if len(dlq) != 1 || !strings.Contains(dlq[0].Headers["error"], tt.wantErr) {
				t.Fatalf("DLQ %+v, want one record with error containing %q", dlq, tt.wantErr)
			}
			if hit := refusals.Hits() > 0; hit != tt.kafkaHits {
				t.Errorf("Kafka refused %d requests; want refusals: %t", refusals.Hits(), tt.kafkaHits)
			}
			waitMetric(t, fwd.addr, "forwarder_acked_total", float64(len(devs)*20+1))
		})
	}
}

// TestRefusedBatchDeadLettersOnlyTheRecord: with a long linger, a poison
// reading shares its partition's batch with other devices' readings. Kafka
// refuses the whole batch (INVALID_RECORD); the forwarder sends its records
// alone, dead-letters only the poison, and writes the others once each.
func TestRefusedBatchDeadLettersOnlyTheRecord(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	const poisonDev = "pi-poison"
	part := kafka.Partition(poisonDev, stack.Partitions)
	var devs []string // devices that share the poison's partition
	for i := 0; len(devs) < 3; i++ {
		if dev := fmt.Sprintf("pi-%d", i); kafka.Partition(dev, stack.Partitions) == part {
			devs = append(devs, dev)
		}
	}
	refusals := refuseWhen(t, k, stack.Topic, poisonDev, kerr.InvalidRecord, -1, func(_ kmsg.RecordBatch, raw []byte) bool {
		return bytes.Contains(raw, []byte(poisonDev))
	})
	env := stack.Env(b, k, certs, "fwd-batch")
	env["KAFKA_COMPRESSION"] = "none"
	env["KAFKA_BATCH_TIMEOUT"] = "300ms" // one batch for the burst
	fwd := start(t, env)
	pub := stack.NewPublisher(t, b, certs, "pub-batch")
	const n = 10
	pub.PublishReadings(t, devs, 1, n/2)
	pub.Publish(t, stack.ReadingTopic(poisonDev), poison(poisonDev))
	pub.PublishReadings(t, devs, n/2+1, n)

	recs := k.ReadN(t, stack.Topic, len(devs)*n, 30*time.Second, 300*time.Millisecond)
	if dups := checkReadings(t, recs, devs, n, "fwd-batch"); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	dlq := k.ReadN(t, stack.DLQTopic, 1, 30*time.Second, 300*time.Millisecond)
	if len(dlq) != 1 || !bytes.Equal(dlq[0].Value, poison(poisonDev)) {
		t.Fatalf("DLQ holds %d records, want the poison alone", len(dlq))
	}
	if refusals.Hits() < 2 {
		t.Errorf("Kafka refused %d batches; want the shared batch and the poison alone", refusals.Hits())
	}
	waitMetric(t, fwd.addr, "forwarder_acked_total", float64(len(devs)*n+1))
	waitMetric(t, fwd.addr, "forwarder_refused_total", 1)
}

// TestDLQRefusalHoldsTheReading: Kafka refuses a reading on the main topic
// and its dead letter on the DLQ. The reading is not dropped, not acked on
// MQTT and not confirmed: the refusal is counted, retried, and /readyz
// turns red; the readings around it reach Kafka and are confirmed (their
// PUBACKs wait behind it, in arrival order). Once the DLQ takes dead letters
// again, the reading lands there and is confirmed.
func TestDLQRefusalHoldsTheReading(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	const poisonDev = "pi-poison"
	isPoison := func(_ kmsg.RecordBatch, raw []byte) bool { return bytes.Contains(raw, []byte(poisonDev)) }
	refuseWhen(t, k, stack.Topic, poisonDev, kerr.InvalidRecord, -1, isPoison)
	dlqRefuses := refusePartition(t, k, stack.DLQTopic, 0, kerr.InvalidRecord, -1, isPoison)
	env := stack.Env(b, k, certs, "fwd-dlq-refused")
	env["KAFKA_COMPRESSION"] = "none"
	env["FORWARDER_CONFIRM_INTERVAL"] = "100ms"
	fwd := start(t, env)
	pub := stack.NewPublisher(t, b, certs, "pub-dlq-refused")
	devs := stack.Devices(3)
	const n = 20
	pub.PublishReadings(t, devs, 1, n/2)
	pub.Publish(t, stack.ReadingTopic(poisonDev), poison(poisonDev))
	pub.PublishReadings(t, devs, n/2+1, n)

	recs := k.ReadN(t, stack.Topic, len(devs)*n, 30*time.Second, 300*time.Millisecond)
	checkReadings(t, recs, devs, n, "fwd-dlq-refused")
	waitConfirmed(t, acks, devs, 1, n, 10*time.Second)
	// PUBACKs go out in arrival order: the held reading holds those behind it.
	waitMetric(t, fwd.addr, "forwarder_acked_total", float64(len(devs)*n/2))
	kit.WaitFor(t, "the DLQ's refusals counted", 10*time.Second, func() bool {
		return metric(t, fwd.addr, "forwarder_dlq_refused_total") >= 2 // refused, and refused again on retry
	})
	if got := metric(t, fwd.addr, "forwarder_in_flight"); got != float64(len(devs)*n/2+1) {
		t.Errorf("forwarder_in_flight = %v, want the reading the DLQ refused and those behind it", got)
	}
	kit.WaitFor(t, "/readyz red while the reading waits", 30*time.Second, func() bool {
		code, body := get(fwd.addr, "/readyz")
		return code == 503 && strings.Contains(body, "kafka_ready=false")
	})
	if got := acks.Confirmed(ackTopic(poisonDev)); len(got) != 0 {
		t.Fatalf("the poison reading was confirmed (%v) although no topic holds it", got)
	}
	if dlq := k.ReadN(t, stack.DLQTopic, 1, time.Second, 0); len(dlq) != 0 {
		t.Fatalf("DLQ holds %d records while it refuses them (a dead letter without its value?)", len(dlq))
	}

	dlqRefuses.Remove() // the operator fixes the DLQ
	dlq := k.ReadN(t, stack.DLQTopic, 1, 30*time.Second, 300*time.Millisecond)
	if len(dlq) != 1 || !bytes.Equal(dlq[0].Value, poison(poisonDev)) {
		t.Fatalf("DLQ holds %d records, want the poison reading with its value", len(dlq))
	}
	waitConfirmed(t, acks, []string{poisonDev}, 1, 1, 10*time.Second)
	waitMetric(t, fwd.addr, "forwarder_acked_total", float64(len(devs)*n+1))
	waitReady(t, fwd.addr, 10*time.Second)
}
