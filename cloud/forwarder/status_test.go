package forwarder_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
	"github.com/edgepipe/sensorpipe/cloud/kafkaout"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

func beat(state string, interval int64) []byte {
	return heartbeat.Encode(&heartbeat.Heartbeat{State: state, TS: time.Now().Unix(), Agent: "1.0.0", StatusInterval: interval})
}

// TestStatusRelay runs the real forwarder against mosquitto with the
// shipped permission table over TLS, and kfake with TLS and SASL: the
// devices' heartbeats reach the status topic keyed by the device their
// topic names, with mqtt_retained telling the retained copy the broker
// hands over at subscribe from a live one; a heartbeat that does not
// decode goes to the DLQ and the stream goes on; and a heartbeat is acked
// on MQTT only once Kafka has it.
func TestStatusRelay(t *testing.T) {
	certs := pki.New(t)
	pw := map[string]string{"fwd-hb": "fwd-pw", "pi-A": "a-pw", "pi-B": "b-pw"}
	m := broker.StartMosquitto(t, broker.MosquittoConfig{PKI: certs, Logins: []brokerauth.Login{
		{Name: "fwd-hb", Role: brokerauth.Forwarder, Password: pw["fwd-hb"]},
		{Name: "pi-A", Role: brokerauth.Device, Password: pw["pi-A"]},
		{Name: "pi-B", Role: brokerauth.Device, Password: pw["pi-B"]},
	}})
	k := stack.StartKafka(t, certs)
	device := func(id string) *broker.Publisher {
		return broker.NewPublisher(t, broker.PubOptions{URL: m.URL(), TLS: certs.Client(), Username: id, Password: pw[id], ClientID: id})
	}
	devA, devB := device("pi-A"), device("pi-B")

	// pi-A spoke before the forwarder subscribed: the broker hands its
	// retained heartbeat over at subscribe.
	devA.PublishRetained(t, heartbeat.Topic("sensors", "pi-A"), beat(heartbeat.Online, 60))
	env := map[string]string{
		"HIVEMQ_URL": m.URL(), "HIVEMQ_USERNAME": "fwd-hb", "HIVEMQ_PASSWORD": pw["fwd-hb"], "HIVEMQ_CA_FILE": certs.CAFile,
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr, "CONFLUENT_API_KEY": stack.KafkaUser,
		"CONFLUENT_API_SECRET": stack.KafkaSecret, "KAFKA_CA_FILE": certs.CAFile,
		"FORWARDER_ID": "fwd-hb", "FORWARDER_LISTEN": "127.0.0.1:0",
	}
	fwd := start(t, env) // ready: both subscriptions granted
	waitMetric(t, fwd.addr, "forwarder_status_relayed_total", 1)

	devB.PublishRetained(t, heartbeat.Topic("sensors", "pi-B"), beat(heartbeat.Online, 10))
	bad := []byte(`{"v":2,"state":"asleep"}`)
	devA.PublishRetained(t, heartbeat.Topic("sensors", "pi-A"), bad)
	huge := []byte(`{"v":2,"state":"online","agent":"` + strings.Repeat("x", heartbeat.MaxPayload) + `"}`)
	devB.PublishRetained(t, heartbeat.Topic("sensors", "pi-B"), huge)
	devA.PublishRetained(t, heartbeat.Topic("sensors", "pi-A"), beat(heartbeat.Offline, 60))

	recs := k.ReadN(t, stack.StatusTopic, 3, 20*time.Second, 300*time.Millisecond)
	want := []struct{ key, retained, state string }{{"pi-A", "true", "online"}, {"pi-B", "false", "online"}, {"pi-A", "false", "offline"}}
	if len(recs) != len(want) {
		t.Fatalf("%d records on %s, want %d: %+v", len(recs), stack.StatusTopic, len(want), recs)
	}
	byKey := map[string][]kafka.Record{}
	for _, r := range recs {
		byKey[r.Key] = append(byKey[r.Key], r) // per key: one partition, in order
	}
	seen := map[string]int{}
	for _, w := range want {
		i := seen[w.key]
		seen[w.key]++
		r := byKey[w.key][i]
		h, err := heartbeat.Decode(r.Value)
		switch {
		case err != nil:
			t.Errorf("%s #%d: %v", w.key, i, err)
		case h.State != w.state:
			t.Errorf("%s #%d: state %q, want %q", w.key, i, h.State, w.state)
		}
		wantHdr := map[string]string{"mqtt_topic": heartbeat.Topic("sensors", w.key), "device_id": w.key,
			"forwarder_id": "fwd-hb", kafkaout.HeaderRetained: w.retained}
		for k, v := range wantHdr {
			if r.Headers[k] != v {
				t.Errorf("%s #%d: header %s = %q, want %q", w.key, i, k, r.Headers[k], v)
			}
		}
		if age := time.Since(r.Time); age < 0 || age > time.Minute {
			t.Errorf("%s #%d: record time %v is not when the forwarder received it", w.key, i, r.Time)
		}
	}

	// The bad one and the oversize one (truncated to FORWARDER_DLQ_MAX_BYTES), each with its error.
	dlq := k.ReadN(t, stack.DLQTopic, 2, 10*time.Second, 300*time.Millisecond)
	if len(dlq) != 2 {
		t.Fatalf("DLQ holds %d records, want the bad and the oversize heartbeat: %+v", len(dlq), dlq)
	}
	byTopic := map[string]kafka.Record{}
	for _, r := range dlq {
		byTopic[r.Headers["mqtt_topic"]] = r
	}
	if r := byTopic[heartbeat.Topic("sensors", "pi-A")]; string(r.Value) != string(bad) || !strings.Contains(r.Headers["error"], "asleep") {
		t.Errorf("DLQ record of pi-A = %+v, want the bad heartbeat with its error", r)
	}
	if r := byTopic[heartbeat.Topic("sensors", "pi-B")]; r.Headers["original_bytes"] != strconv.Itoa(len(huge)) ||
		len(r.Value) != 65536 || !strings.Contains(r.Headers["error"], "more than") {
		t.Errorf("DLQ record of pi-B: %d bytes, headers %v; want the oversize heartbeat truncated, with its size and error", len(r.Value), r.Headers)
	}
	waitMetric(t, fwd.addr, "forwarder_dlq_total", 2)
	if n := metric(t, fwd.addr, "forwarder_dlq_unconfirmable_total"); n != 0 {
		t.Errorf("forwarder_dlq_unconfirmable_total = %v: a heartbeat has nothing to confirm", n)
	}

	// Kafka away: a heartbeat is received and held, not acked.
	acked := metric(t, fwd.addr, "forwarder_acked_total")
	k.Cut()
	devB.PublishRetained(t, heartbeat.Topic("sensors", "pi-B"), beat(heartbeat.Online, 10))
	waitMetric(t, fwd.addr, "forwarder_in_flight", 1)
	// A write failed since it came in: an ack sent before Kafka took the
	// heartbeat would be out by now.
	errs := metric(t, fwd.addr, "forwarder_produce_errors_total")
	testkit.WaitFor(t, "a failed Kafka write", 10*time.Second, func() bool {
		return metric(t, fwd.addr, "forwarder_produce_errors_total") > errs
	})
	if got := metric(t, fwd.addr, "forwarder_acked_total"); got != acked {
		t.Fatalf("acked %v heartbeats while Kafka was away", got-acked)
	}
	k.Restore()
	waitMetric(t, fwd.addr, "forwarder_status_relayed_total", 4)
	waitMetric(t, fwd.addr, "forwarder_acked_total", acked+1)
	waitMetric(t, fwd.addr, "forwarder_in_flight", 0)
}

// TestStatusRelayOff: with KAFKA_STATUS_TOPIC=off the forwarder neither
// subscribes to the heartbeats nor writes them.
func TestStatusRelayOff(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	env := stack.Env(b, k, certs, "fwd-hb-off")
	env["KAFKA_STATUS_TOPIC"] = "off"
	fwd := start(t, env)
	pub := stack.NewPublisher(t, b, certs, "pub-hb-off")
	pub.PublishRetained(t, heartbeat.Topic("sensors", "pi-0"), beat(heartbeat.Online, 60))
	pub.PublishReadings(t, []string{"pi-0"}, 1, 1)
	waitMetric(t, fwd.addr, "forwarder_acked_total", 1)
	if n := metric(t, fwd.addr, "forwarder_received_total"); n != 1 {
		t.Errorf("received %v messages, want the reading only", n)
	}
	if recs := k.ReadN(t, stack.StatusTopic, 1, time.Second, 0); len(recs) != 0 {
		t.Errorf("%d records on the status topic with the relay off", len(recs))
	}
}

// TestStatusTopicNotCompacted: a status topic that deletes by age rather
// than compacting is named in a warning at start; a compacted one is not.
func TestStatusTopicNotCompacted(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	for _, compact := range []bool{false, true} {
		ko := kafka.Options{PKI: certs, User: stack.KafkaUser, Password: stack.KafkaSecret,
			Topics: map[string]int32{stack.Topic: 1, stack.DLQTopic: 1, stack.StatusTopic: 1}}
		if compact {
			ko.TopicConfigs = map[string]map[string]string{stack.StatusTopic: {"cleanup.policy": "compact"}}
		}
		k := kafka.New(t, ko)
		addr, logs, stop := startLogged(t, stack.Env(b, k, certs, "fwd-compact"))
		waitLog(t, logs, "kafka durability")
		waitReady(t, addr, 20*time.Second)
		stop()
		warned := strings.Contains(logs.String(), "status topic is not compacted")
		if warned == compact {
			t.Errorf("cleanup.policy compact=%t: warned=%t\n%s", compact, warned, logs)
		}
	}
}

// TestStatusRelayShared: replicas in a share group read the heartbeats as
// $share/GROUP/{prefix}/+/status, which the shipped table allows. A shared
// subscription gets no retained copy at subscribe; live heartbeats come.
func TestStatusRelayShared(t *testing.T) {
	certs := pki.New(t)
	m := broker.StartMosquitto(t, broker.MosquittoConfig{PKI: certs, Logins: []brokerauth.Login{
		{Name: "fwd-s", Role: brokerauth.Forwarder, Password: "fwd-pw"},
		{Name: "pi-A", Role: brokerauth.Device, Password: "a-pw"},
	}})
	k := stack.StartKafka(t, certs)
	env := map[string]string{
		"HIVEMQ_URL": m.URL(), "HIVEMQ_USERNAME": "fwd-s", "HIVEMQ_PASSWORD": "fwd-pw", "HIVEMQ_CA_FILE": certs.CAFile,
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr, "CONFLUENT_API_KEY": stack.KafkaUser,
		"CONFLUENT_API_SECRET": stack.KafkaSecret, "KAFKA_CA_FILE": certs.CAFile,
		"FORWARDER_ID": "fwd-s", "FORWARDER_LISTEN": "127.0.0.1:0", "FORWARDER_SHARE_GROUP": "fwd",
	}
	fwd := start(t, env)
	dev := broker.NewPublisher(t, broker.PubOptions{URL: m.URL(), TLS: certs.Client(), Username: "pi-A", Password: "a-pw", ClientID: "pi-A"})
	dev.PublishRetained(t, heartbeat.Topic("sensors", "pi-A"), beat(heartbeat.Online, 60))
	recs := k.ReadN(t, stack.StatusTopic, 1, 20*time.Second, 300*time.Millisecond)
	if len(recs) != 1 || recs[0].Key != "pi-A" || recs[0].Headers[kafkaout.HeaderRetained] != "false" {
		t.Fatalf("status topic = %+v, want pi-A's live heartbeat", recs)
	}
	waitMetric(t, fwd.addr, "forwarder_status_relayed_total", 1)
}

// TestStatusTopicMissing: a cluster without the status topic (set up
// before the relay) never holds the readings up. The forwarder is ready,
// says at start that heartbeats are not relayed, acks them unrelayed, and
// relays them once the topic is created.
func TestStatusTopicMissing(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := kafka.New(t, kafka.Options{PKI: certs, User: stack.KafkaUser, Password: stack.KafkaSecret,
		Topics: map[string]int32{stack.Topic: 1, stack.DLQTopic: 1}})
	addr, logs, stop := startLogged(t, stack.Env(b, k, certs, "fwd-nostatus"))
	defer stop()
	waitReady(t, addr, 20*time.Second)
	waitLog(t, logs, "kafka status topic does not exist")
	pub := stack.NewPublisher(t, b, certs, "pub-nostatus")
	pub.PublishRetained(t, heartbeat.Topic("sensors", "pi-0"), beat(heartbeat.Online, 60))
	pub.PublishReadings(t, []string{"pi-0"}, 1, 50)
	waitMetric(t, addr, "forwarder_acked_total", 51)
	waitMetric(t, addr, "forwarder_status_dropped_total", 1)
	if recs := k.ReadN(t, stack.Topic, 50, 10*time.Second, 0); len(recs) != 50 {
		t.Fatalf("%d readings in Kafka, want 50", len(recs))
	}

	if err := k.Cluster.CreateTopic(stack.StatusTopic, 1, map[string]string{"cleanup.policy": "compact"}); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, "kafka status topic exists: relaying heartbeats")
	pub.PublishRetained(t, heartbeat.Topic("sensors", "pi-0"), beat(heartbeat.Online, 60))
	waitMetric(t, addr, "forwarder_status_relayed_total", 1)
	if recs := k.ReadN(t, stack.StatusTopic, 1, 10*time.Second, 0); len(recs) != 1 || recs[0].Key != "pi-0" {
		t.Fatalf("status topic = %+v, want pi-0's heartbeat", recs)
	}
}
