// Package stack is the standard set-up of the forwarder's and the sink's
// tests and benchmarks: the credentials every test server uses, a mochi
// broker and a kfake cluster (TLS, SASL PLAIN, behind a fault proxy) with
// those credentials, the forwarder's environment for them, sample readings
// and a publisher that sends them as the agent would. The parts themselves
// are in scripts/testkit/broker, kafka and pki.
//
//	certs := pki.New(t)
//	b, k := stack.StartBroker(t, certs, stack.BrokerOptions{}), stack.StartKafka(t, certs)
//	env := stack.Env(b, k, certs, "fwd-1") // HIVEMQ_URL, CONFLUENT_*, ... for cloud-forwarder
//	stack.NewPublisher(t, b, certs, "pub").PublishReadings(t, stack.Devices(3), 1, 100)
package stack

import (
	"strconv"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// Credentials used by every test server.
const (
	MQTTUser     = "forwarder"
	MQTTPassword = "mqtt-pass-\u00e9" // non-ASCII on purpose
	PubUser      = "publisher"
	PubPassword  = "pub-pass"
	KafkaUser    = "api-key"
	KafkaSecret  = "api-secret"
	Topic        = "sensor-readings"
	DLQTopic     = "sensor-readings.dlq"
	StatusTopic  = "sensor-status" // the devices' heartbeats (KAFKA_STATUS_TOPIC)
	Partitions   = 6
)

// BrokerOptions tune StartBroker; zero values are sensible.
type BrokerOptions struct {
	MaxInflight   uint16 // see broker.Options
	MaxPacketSize uint32 // see broker.Options
	// DenySubscribe refuses MQTTUser's subscriptions (SUBACK 0x80), as a
	// HiveMQ Cloud credential without subscribe permission does.
	DenySubscribe bool
}

// StartBroker runs mochi with TLS and the forwarder's and the publisher's
// credentials until the test ends.
func StartBroker(tb testing.TB, certs *pki.PKI, o BrokerOptions) *broker.Broker {
	tb.Helper()
	bo := broker.Options{
		TLS:           certs.Server,
		Users:         map[string]string{MQTTUser: MQTTPassword, PubUser: PubPassword},
		MaxInflight:   o.MaxInflight,
		MaxPacketSize: o.MaxPacketSize,
	}
	if o.DenySubscribe {
		bo.DenySubscribe = []string{MQTTUser}
	}
	return broker.New(tb, bo)
}

// KafkaOptions tune StartKafkaWith.
type KafkaOptions struct {
	Plaintext bool // no TLS, no SASL, no proxy (benchmarks against a loopback cluster)
	Proxy     bool // with Plaintext too: clients connect through the fault proxy
	Brokers   int  // more than one: TLS and SASL as usual but no proxy (leaders can move)
}

// StartKafka runs kfake with TLS and SASL PLAIN, the topic (Partitions
// partitions) and its DLQ, behind a fault proxy (Cut, Restore), until the
// test ends.
func StartKafka(tb testing.TB, certs *pki.PKI) *kafka.Cluster {
	tb.Helper()
	return StartKafkaWith(tb, certs, KafkaOptions{})
}

// StartKafkaWith is StartKafka with options.
func StartKafkaWith(tb testing.TB, certs *pki.PKI, o KafkaOptions) *kafka.Cluster {
	tb.Helper()
	ko := kafka.Options{Topics: map[string]int32{Topic: Partitions, DLQTopic: 1, StatusTopic: 2},
		// Compacted, as production's should be: each device's latest heartbeat kept.
		TopicConfigs: map[string]map[string]string{StatusTopic: {"cleanup.policy": "compact"}}}
	if !o.Plaintext {
		ko.PKI, ko.User, ko.Password, ko.Proxy = certs, KafkaUser, KafkaSecret, true
	}
	ko.Proxy = (ko.Proxy || o.Proxy) && o.Brokers <= 1
	ko.Brokers = o.Brokers
	return kafka.New(tb, ko)
}

// Env returns the forwarder environment for these servers.
func Env(b *broker.Broker, k *kafka.Cluster, certs *pki.PKI, id string) map[string]string {
	return map[string]string{
		"HIVEMQ_URL":                      b.TLSURL(),
		"HIVEMQ_USERNAME":                 MQTTUser,
		"HIVEMQ_PASSWORD":                 MQTTPassword,
		"HIVEMQ_CA_FILE":                  certs.CAFile,
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr,
		"CONFLUENT_API_KEY":               KafkaUser,
		"CONFLUENT_API_SECRET":            KafkaSecret,
		"KAFKA_CA_FILE":                   certs.CAFile,
		"FORWARDER_ID":                    id,
		"FORWARDER_LISTEN":                "127.0.0.1:0",
	}
}

// Reading returns a valid reading for device dev with sequence seq.
func Reading(dev string, seq uint64) *reading.Reading {
	return &reading.Reading{
		DeviceID: dev, Seq: seq, Sensor: "sim-1", Kind: "sim",
		TS:         time.UnixMilli(1_790_000_000_000 + int64(seq)).UTC(),
		TimeSynced: true,
		Values:     map[string]float64{reading.Temperature: 20 + float64(seq%100)/10, reading.Humidity: 45.5},
	}
}

// ReadingTopic is the agent's topic for a reading.
func ReadingTopic(dev string) string { return "sensors/" + dev + "/sim-1/reading" }

// Publisher publishes QoS 1 as the edge agent would.
type Publisher struct{ *broker.Publisher }

// NewPublisher connects a publisher (clean session) to b over TLS.
func NewPublisher(tb testing.TB, b *broker.Broker, certs *pki.PKI, id string) *Publisher {
	tb.Helper()
	return &Publisher{broker.NewPublisher(tb, broker.PubOptions{URL: b.TLSURL(), TLS: certs.Client(),
		Username: PubUser, Password: PubPassword, ClientID: id})}
}

// PublishReadings publishes seqs from..to (inclusive) for each device, interleaved.
func (p *Publisher) PublishReadings(tb testing.TB, devs []string, from, to uint64) {
	tb.Helper()
	var topics []string
	var payloads [][]byte
	for s := from; s <= to; s++ {
		for _, d := range devs {
			topics = append(topics, ReadingTopic(d))
			payloads = append(payloads, reading.Encode(nil, Reading(d, s)))
		}
	}
	p.PublishEach(tb, topics, payloads)
}

// Devices returns n device ids.
func Devices(n int) []string {
	ds := make([]string, n)
	for i := range ds {
		ds[i] = "pi-" + strconv.Itoa(i)
	}
	return ds
}
