// Package testkit starts the real servers the forwarder's tests and
// benchmarks talk to, on 127.0.0.1:0: an embedded mochi MQTT broker with TLS
// and username/password auth, and a kfake Kafka cluster with TLS and SASL
// PLAIN whose listener can be cut and restored to simulate an outage. It
// also publishes readings and reads records back with kafka-go. Test
// certificates are generated per run; nothing secret is checked in.
package testkit

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	plainkgo "github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
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

// Kafka is a kfake cluster behind a listener that can be cut.
type Kafka struct {
	Cluster *kfake.Cluster
	Addr    string
	// Proxy, with KafkaOptions.Proxy, relays every client connection (the
	// cluster advertises the proxy's address in its metadata); SetDelay on it
	// puts Kafka at a distance.
	Proxy *tcpproxy.Proxy
	// Direct is kfake's own listener, behind the proxy: a client that must
	// not pay the proxy's delay dials it in place of the advertised address.
	Direct string
	certs  *pki.PKI
	gates  []*gate
}

// StartKafka runs kfake with TLS and SASL PLAIN, the topic (6 partitions) and its DLQ.
func StartKafka(tb testing.TB, certs *pki.PKI) *Kafka {
	tb.Helper()
	return StartKafkaWith(tb, certs, KafkaOptions{})
}

// KafkaOptions tune StartKafkaWith.
type KafkaOptions struct {
	Plaintext bool // no TLS, no SASL (benchmarks against a loopback cluster)
	Proxy     bool // clients connect through Kafka.Proxy
}

// StartKafkaWith is StartKafka with options.
func StartKafkaWith(tb testing.TB, certs *pki.PKI, o KafkaOptions) *Kafka {
	tb.Helper()
	k := &Kafka{certs: certs}
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if !o.Plaintext {
		opts = append(opts, kfake.TLS(certs.Server), kfake.EnableSASL(), kfake.Superuser("PLAIN", KafkaUser, KafkaSecret))
	} else {
		k.certs = nil
	}
	var direct string
	if o.Proxy {
		p, err := tcpproxy.Listen("127.0.0.1:0", "")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = p.Close() })
		k.Proxy = p
	}
	c, err := kfake.NewCluster(append(opts,
		kfake.SeedTopics(Partitions, Topic),
		kfake.SeedTopics(1, DLQTopic),
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			g := &gate{Listener: ln, conns: map[net.Conn]struct{}{}}
			k.gates = append(k.gates, g)
			if k.Proxy != nil {
				direct = ln.Addr().String()
				if g.advertise, err = net.ResolveTCPAddr("tcp", k.Proxy.Addr()); err != nil {
					return nil, err
				}
			}
			return g, nil
		}),
	)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	k.Cluster = c
	k.Addr = c.ListenAddrs()[0]
	k.Direct = k.Addr
	if k.Proxy != nil {
		k.Direct = direct
		k.Proxy.SetTarget(direct)
	}
	return k
}

// Cut closes every Kafka connection and refuses new ones (as a network outage would).
func (k *Kafka) Cut() {
	for _, g := range k.gates {
		g.set(true)
	}
}

// Restore accepts connections again.
func (k *Kafka) Restore() {
	for _, g := range k.gates {
		g.set(false)
	}
}

// gate is a listener whose connections can be dropped on demand.
type gate struct {
	net.Listener
	advertise net.Addr // reported by Addr when set (kfake puts it in metadata)
	mu        sync.Mutex
	down      bool
	conns     map[net.Conn]struct{}
}

func (g *gate) Addr() net.Addr {
	if g.advertise != nil {
		return g.advertise
	}
	return g.Listener.Addr()
}

func (g *gate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		g.mu.Lock()
		if g.down {
			g.mu.Unlock()
			_ = c.Close()
			continue
		}
		gc := &gatedConn{Conn: c, g: g}
		g.conns[gc] = struct{}{}
		g.mu.Unlock()
		return gc, nil
	}
}

func (g *gate) set(down bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = down
	if down {
		for c := range g.conns {
			_ = c.(*gatedConn).Conn.Close()
		}
		clear(g.conns)
	}
}

type gatedConn struct {
	net.Conn
	g *gate
}

func (c *gatedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c)
	c.g.mu.Unlock()
	return c.Conn.Close()
}

// Env returns the forwarder environment for these servers.
func Env(b *broker.Broker, k *Kafka, certs *pki.PKI, id string) map[string]string {
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

// Record is one record read back from Kafka.
type Record struct {
	Topic     string
	Partition int
	Offset    int64
	Key       string
	Value     []byte
	Time      time.Time
	Headers   map[string]string
}

// ReadN reads records from topic with a kafka-go Reader (fresh group, from
// the beginning) until n arrived or timeout passed, then keeps reading for
// settle to catch extras (duplicates). It returns what it read.
func (k *Kafka) ReadN(tb testing.TB, topic string, n int, timeout, settle time.Duration) []Record {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: []string{k.Addr}, Topic: topic, GroupID: fmt.Sprintf("check-%x", b),
		StartOffset: kafka.FirstOffset, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond,
		Dialer: k.dialer(),
	})
	defer r.Close()
	var out []Record
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var settleCancel context.CancelFunc
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			break
		}
		hs := map[string]string{}
		for _, h := range m.Headers {
			hs[h.Key] = string(h.Value)
		}
		out = append(out, Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: string(m.Key),
			Value: m.Value, Time: m.Time, Headers: hs})
		if len(out) == n && settleCancel == nil {
			cancel()
			ctx, settleCancel = context.WithTimeout(context.Background(), settle)
			defer settleCancel()
		}
	}
	return out
}

func (k *Kafka) dialer() *kafka.Dialer {
	if k.certs == nil {
		return &kafka.Dialer{Timeout: 5 * time.Second}
	}
	return &kafka.Dialer{Timeout: 5 * time.Second, TLS: k.certs.Client(),
		SASLMechanism: plain.Mechanism{Username: KafkaUser, Password: KafkaSecret}}
}

// Partition returns the partition the Java client's default partitioner
// (murmur2, via franz-go's independent implementation) picks for key.
func Partition(key string, n int) int {
	return kgo.StickyKeyPartitioner(nil).ForTopic(Topic).Partition(&kgo.Record{Key: []byte(key)}, n)
}

// Produce writes values to topic with franz-go (acks=all), keyed by
// keys[i] when keys is not nil (the forwarder keys by device_id), and waits
// until Kafka has them all.
func (k *Kafka) Produce(tb testing.TB, topic string, keys []string, values ...[]byte) {
	tb.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(k.Addr), kgo.ProducerLinger(0), kgo.RecordRetries(5)}
	if k.certs != nil {
		opts = append(opts, kgo.DialTLSConfig(k.certs.Client()),
			kgo.SASL(plainkgo.Auth{User: KafkaUser, Pass: KafkaSecret}.AsMechanism()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, len(values))
	for i, v := range values {
		recs[i] = &kgo.Record{Topic: topic, Value: v}
		if keys != nil {
			recs[i].Key = []byte(keys[i])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		tb.Fatalf("produce to %s: %v", topic, err)
	}
}
