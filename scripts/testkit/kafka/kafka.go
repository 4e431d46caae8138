// Package kafka runs franz-go's kfake, a Kafka-protocol server in memory,
// the way tests, benchmarks, the e2e harness and the demo need it: with TLS
// and SASL PLAIN as in production (or plaintext), seeded topics, and
// optionally a fault proxy in front whose address is the one the broker
// advertises, so every client connection (bootstrap and broker) goes
// through it and Kafka can be cut off without losing the records kfake
// keeps. It also reads records back and produces them, with franz-go as
// every command does.
//
//	k := kafka.New(t, kafka.Options{PKI: certs, User: "key", Password: "secret",
//		Topics: map[string]int32{"sensor-readings": 6}, Proxy: true})
//	k.Cut()     // a Kafka outage: every connection closed, new ones refused
//	k.Restore() // back
package kafka

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	plainkgo "github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// Options configures a cluster on 127.0.0.1 (one broker unless Brokers).
type Options struct {
	// Brokers is the number of brokers (0: 1). More than one cannot go
	// behind the proxy, which stands for one address.
	Brokers int
	// PKI, when set, serves TLS with its certificate; nil is PLAINTEXT.
	PKI *pki.PKI
	// User and Password, when set, require SASL PLAIN with this superuser.
	User, Password string
	// Topics are created at start: name -> partitions.
	Topics map[string]int32
	// TopicConfigs are the configs of some of Topics (name -> config ->
	// value), e.g. cleanup.policy=compact for the status topic.
	TopicConfigs map[string]map[string]string
	// Proxy routes every client connection through a fault proxy (Cut,
	// Restore, Proxy); DirectAddr still reaches kfake itself.
	Proxy bool
}

// Cluster is a running kfake cluster.
type Cluster struct {
	Cluster *kfake.Cluster
	Addr    string // the bootstrap address clients use (the proxy's, with Options.Proxy)
	direct  string
	proxy   *tcpproxy.Proxy
	o       Options
}

// New starts a cluster that closes when the test ends.
func New(tb testing.TB, o Options) *Cluster {
	tb.Helper()
	c, err := Start(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// advertised reports the proxy's address as its own, which is what kfake
// puts in metadata responses.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// Start starts a cluster, for programs; Close it.
func Start(o Options) (*Cluster, error) {
	c := &Cluster{o: o}
	if o.Brokers > 1 && o.Proxy {
		return nil, fmt.Errorf("kafka: %d brokers cannot share one proxy", o.Brokers)
	}
	opts := []kfake.Opt{kfake.NumBrokers(max(o.Brokers, 1))}
	if o.PKI != nil {
		opts = append(opts, kfake.TLS(o.PKI.Server))
	}
	if o.User != "" {
		opts = append(opts, kfake.EnableSASL(), kfake.Superuser("PLAIN", o.User, o.Password))
	}
	for t, n := range o.Topics {
		if o.TopicConfigs[t] == nil {
			opts = append(opts, kfake.SeedTopics(n, t))
		}
	}
	if o.Proxy {
		p, err := tcpproxy.Listen("127.0.0.1:0", "")
		if err != nil {
			return nil, fmt.Errorf("kafka proxy: %w", err)
		}
		proxyAddr, err := net.ResolveTCPAddr("tcp", p.Addr())
		if err != nil {
			p.Close()
			return nil, err
		}
		c.proxy = p
		opts = append(opts, kfake.ListenFn(func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			c.direct = ln.Addr().String()
			return advertised{Listener: ln, addr: proxyAddr}, nil
		}))
	}
	kc, err := kfake.NewCluster(opts...)
	if err != nil {
		if c.proxy != nil {
			c.proxy.Close()
		}
		return nil, fmt.Errorf("start kfake: %w", err)
	}
	c.Cluster = kc
	for t, cfg := range o.TopicConfigs {
		if err := kc.CreateTopic(t, o.Topics[t], cfg); err != nil {
			kc.Close()
			if c.proxy != nil {
				c.proxy.Close()
			}
			return nil, fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	if c.proxy != nil {
		c.proxy.SetTarget(c.direct)
		c.Addr = c.proxy.Addr()
	} else {
		c.Addr = kc.ListenAddrs()[0]
		c.direct = c.Addr
	}
	return c, nil
}

// DirectAddr is kfake's own listener, for a client that must not be cut
// off with the others (dial it in place of Addr).
func (c *Cluster) DirectAddr() string { return c.direct }

// Proxy is the proxy every client connection goes through (nil without
// Options.Proxy).
func (c *Cluster) Proxy() *tcpproxy.Proxy { return c.proxy }

// Cut closes every Kafka connection and refuses new ones, as an outage
// would. It needs Options.Proxy.
func (c *Cluster) Cut() { c.mustProxy().SetMode(tcpproxy.Refuse) }

// Restore accepts connections again after Cut.
func (c *Cluster) Restore() { c.mustProxy().SetMode(tcpproxy.Pass) }

func (c *Cluster) mustProxy() *tcpproxy.Proxy {
	if c.proxy == nil {
		panic("kafka: Cut and Restore need Options.Proxy")
	}
	return c.proxy
}

// Close stops the proxy and the cluster.
func (c *Cluster) Close() {
	if c.proxy != nil {
		c.proxy.Close()
	}
	c.Cluster.Close()
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

// ReadN reads records from topic with a franz-go consumer (every
// partition, from the beginning, no group) until n arrived or timeout
// passed, then keeps reading for settle to catch extras (duplicates). It
// returns what it read.
func (c *Cluster) ReadN(tb testing.TB, topic string, n int, timeout, settle time.Duration) []Record {
	tb.Helper()
	cl, err := kgo.NewClient(append(c.clientOpts(),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond), kgo.FetchMaxBytes(10<<20))...)
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	var out []Record
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	settling := false
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			hs := map[string]string{}
			for _, h := range r.Headers {
				hs[h.Key] = string(h.Value)
			}
			out = append(out, Record{Topic: r.Topic, Partition: int(r.Partition), Offset: r.Offset, Key: string(r.Key),
				Value: r.Value, Time: r.Timestamp, Headers: hs})
		})
		if len(out) >= n && !settling {
			settling = true
			cancel()
			ctx, cancel = context.WithTimeout(context.Background(), settle)
			defer cancel()
		}
	}
	return out
}

// TopicID is topic's id, by which produce requests of version 13 and
// later name it (their Topic is then empty).
func (c *Cluster) TopicID(tb testing.TB, topic string) [16]byte {
	tb.Helper()
	cl, err := kgo.NewClient(c.clientOpts()...)
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrMetadataRequest()
	t := kmsg.NewMetadataRequestTopic()
	t.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		tb.Fatalf("metadata of %s: %+v, %v", topic, resp, err)
	}
	return resp.Topics[0].TopicID
}

// clientOpts reach the cluster as its clients must: TLS and SASL PLAIN when set.
func (c *Cluster) clientOpts() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Addr)}
	if c.o.PKI != nil {
		opts = append(opts, kgo.DialTLSConfig(c.o.PKI.Client()))
	}
	if c.o.User != "" {
		opts = append(opts, kgo.SASL(plainkgo.Auth{User: c.o.User, Pass: c.o.Password}.AsMechanism()))
	}
	return opts
}

// Produce writes values to topic with franz-go (acks=all), keyed by
// keys[i] when keys is not nil (the forwarder keys by device_id), and waits
// until Kafka has them all.
func (c *Cluster) Produce(tb testing.TB, topic string, keys []string, values ...[]byte) {
	tb.Helper()
	// Batches like the forwarder's (KAFKA_BATCH_SIZE 200 readings, snappy), not
	// kgo's 1 MB default: consumers are measured on what production writes.
	cl, err := kgo.NewClient(append(c.clientOpts(), kgo.ProducerLinger(0), kgo.RecordRetries(5),
		kgo.ProducerBatchMaxBytes(64<<10), kgo.ProducerBatchCompression(kgo.SnappyCompression()))...)
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

// Partition returns the partition the Java client's default partitioner
// (murmur2, via franz-go's independent implementation) picks for key among
// n partitions.
func Partition(key string, n int) int {
	return kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: []byte(key)}, n)
}
