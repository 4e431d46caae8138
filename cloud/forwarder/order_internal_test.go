package forwarder

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgepipe/sensorpipe/cloud/config"
	kit "github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// TestPartitionerIsJavas: keys land on the partition the Java client's
// default partitioner picks, computed from the hashes the Java client's
// Utils.murmur2 returns for them (the cases of Kafka's own UtilsTest, and
// those Akka's Murmur2Spec took from it), masked positive, modulo the
// partition count.
func TestPartitionerIsJavas(t *testing.T) {
	java := map[string]int32{
		"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
		"a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
		"1":   -1993445489, "12": 126087238, "123": -267702483, "1234": -1614185708, "12345": -1188365604,
	}
	tp := partitioner().ForTopic(stack.Topic)
	for key, hash := range java {
		for _, n := range []int{1, 3, 6, 7, 12, 100} {
			want := int(uint32(hash)&0x7fffffff) % n
			if got := tp.Partition(&kgo.Record{Key: []byte(key)}, n); got != want {
				t.Errorf("key %q of %d partitions: partition %d, Java's is %d", key, n, got, want)
			}
		}
	}
}

// orderCfg is the shipped configuration pointed at k.
func orderCfg(t *testing.T, k *kafka.Cluster, certs *pki.PKI) *config.Config {
	t.Helper()
	env := map[string]string{
		"HIVEMQ_URL": "tcp://127.0.0.1:1883", "FORWARDER_ID": "order-test",
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr, "CONFLUENT_API_KEY": stack.KafkaUser,
		"CONFLUENT_API_SECRET": stack.KafkaSecret, "KAFKA_CA_FILE": certs.CAFile,
	}
	cfg, err := config.Load("", func(key string) string { return env[key] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// orderRun writes keys dev-0..dev-(keys-1), perKey records each (the
// value is the seq), through a producer with the forwarder's options.
type orderRun struct {
	t     *testing.T
	cl    *kgo.Client
	keys  int
	n     int
	mu    sync.Mutex
	acked int
	errs  []error
	onAck func(acked int) // called (outside the lock) after each acknowledgement
}

func newOrderRun(t *testing.T, cfg *config.Config, keys, perKey int) *orderRun {
	t.Helper()
	opts, err := producerOpts(cfg, "order-test")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	// The producer id first: the faults are about records in flight, and
	// a client that cannot get an id fails its records (the forwarder
	// holds and retries those; this test counts them as failures).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := cl.ProducerID(ctx); err != nil {
		t.Fatalf("producer id: %v", err)
	}
	return &orderRun{t: t, cl: cl, keys: keys, n: perKey}
}

func (o *orderRun) promise(_ *kgo.Record, err error) {
	o.mu.Lock()
	if err != nil {
		o.errs = append(o.errs, err)
	} else {
		o.acked++
	}
	acked := o.acked
	o.mu.Unlock()
	if err == nil && o.onAck != nil {
		o.onAck(acked)
	}
}

// round produces value seq for every key.
func (o *orderRun) round(seq int) {
	for key := range o.keys {
		o.cl.Produce(context.Background(), &kgo.Record{Topic: stack.Topic, Key: []byte("dev-" + strconv.Itoa(key)),
			Value: []byte(strconv.Itoa(seq))}, o.promise)
	}
}

// wait waits until every record is acknowledged and fails if any failed.
func (o *orderRun) wait() {
	o.t.Helper()
	total := o.keys * o.n
	kit.WaitFor(o.t, "every record acknowledged", 90*time.Second, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.acked+len(o.errs) >= total
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.errs) > 0 {
		o.t.Fatalf("%d records failed, e.g. %v", len(o.errs), o.errs[0])
	}
}

// check reads the topic back and fails unless it holds every record once
// (counted by (key, seq) and by offset: as many records as were written),
// each key on its Java partition with its seqs in offset order.
func (o *orderRun) check(k *kafka.Cluster) {
	o.t.Helper()
	total := o.keys * o.n
	recs := k.ReadN(o.t, stack.Topic, total, 60*time.Second, time.Second)
	seen := map[string]int{}
	next := map[string]int{}
	for _, r := range recs {
		seq, err := strconv.Atoi(string(r.Value))
		if err != nil {
			o.t.Fatalf("bad value %q", r.Value)
		}
		id := fmt.Sprintf("%s/%d", r.Key, seq)
		if seen[id]++; seen[id] > 1 {
			o.t.Errorf("%s written twice (again at %d@%d)", id, r.Partition, r.Offset)
		}
		if want := kafka.Partition(r.Key, stack.Partitions); r.Partition != want {
			o.t.Errorf("key %s in partition %d, Java's partitioner says %d", r.Key, r.Partition, want)
		}
		if seq != next[r.Key] {
			o.t.Fatalf("key %s: seq %d where %d was due (%d@%d): out of order", r.Key, seq, next[r.Key], r.Partition, r.Offset)
		}
		next[r.Key]++
	}
	if len(recs) != total {
		o.t.Errorf("%d records in Kafka for %d written", len(recs), total)
	}
	for key := range o.keys {
		if got := next["dev-"+strconv.Itoa(key)]; got != o.n {
			o.t.Errorf("dev-%d: %d records, want %d", key, got, o.n)
		}
	}
}

// resetAll closes every connection to Kafka and lets new ones through at
// once: the broker stays reachable, the client redials straight away.
func resetAll(p *tcpproxy.Proxy) {
	p.SetMode(tcpproxy.Refuse)
	p.SetMode(tcpproxy.Pass)
}

// TestOrderThroughConnectionResets is the probe that reordered the
// hand-written producer: Kafka 20 ms away, every connection reset while
// requests are pipelined on it and the broker reachable again at once,
// every 400 acknowledgements. Each key's records in order, none twice.
func TestOrderThroughConnectionResets(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	k.Proxy().SetDelay(10*time.Millisecond, time.Millisecond)
	o := newOrderRun(t, orderCfg(t, k, certs), 20, 400)
	resets := make(chan struct{}, 100)
	o.onAck = func(acked int) {
		if acked%400 == 0 && acked < o.keys*o.n {
			resets <- struct{}{}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range resets {
			resetAll(k.Proxy())
		}
	}()
	for seq := range o.n {
		o.round(seq)
	}
	o.wait()
	close(resets)
	<-done
	if n := len(k.Proxy().AcceptsSince(time.Time{})); n < 5 {
		t.Errorf("only %d connections accepted: the resets did not happen", n)
	}
	o.check(k)
}

// TestOrderThroughReauthCloses: a broker with connections.max.reauth.ms
// closes each connection when its session expires; here every connection
// is closed every 300 ms while records stream 20 ms away.
func TestOrderThroughReauthCloses(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	k.Proxy().SetDelay(10*time.Millisecond, time.Millisecond)
	o := newOrderRun(t, orderCfg(t, k, certs), 20, 300)
	closer := time.NewTicker(300 * time.Millisecond)
	defer closer.Stop()
	pace := time.NewTicker(5 * time.Millisecond) // 300 rounds: about 1.5 s of writing
	defer pace.Stop()
	closes := 0
	for seq := 0; seq < o.n; {
		select {
		case <-closer.C:
			resetAll(k.Proxy())
			closes++
		case <-pace.C:
			o.round(seq)
			seq++
		}
	}
	o.wait()
	if closes < 3 {
		t.Errorf("connections closed %d times while writing, want several", closes)
	}
	o.check(k)
}

// TestOrderThroughLeaderMoves: three brokers; twice during the run every
// partition's leader moves to another broker. Requests to the old leader
// are refused (NOT_LEADER_OR_FOLLOWER) and sent again to the new one.
func TestOrderThroughLeaderMoves(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafkaWith(t, certs, stack.KafkaOptions{Brokers: 3})
	o := newOrderRun(t, orderCfg(t, k, certs), 20, 300)
	moves := make(chan struct{}, 2)
	o.onAck = func(acked int) {
		if acked == o.keys*o.n/3 || acked == 2*o.keys*o.n/3 {
			moves <- struct{}{}
		}
	}
	moved := make(chan error, 1)
	go func() {
		var err error
		for range 2 {
			<-moves
			for part := range int32(stack.Partitions) {
				to := (k.Cluster.LeaderFor(stack.Topic, part) + 1) % 3
				if e := k.Cluster.MoveTopicPartition(stack.Topic, part, to); e != nil && err == nil {
					err = fmt.Errorf("move partition %d: %w", part, e)
				}
			}
		}
		moved <- err
	}()
	for seq := range o.n {
		o.round(seq)
	}
	o.wait()
	select {
	case err := <-moved:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the leaders did not move twice during the run")
	}
	o.check(k)
}

// TestOrderThroughRequestTimeouts: Kafka appends a batch and then answers
// REQUEST_TIMED_OUT (replicas too slow for the request's timeout), several
// times: the producer sends the batch again and Kafka, by its sequence
// number, drops the copy.
func TestOrderThroughRequestTimeouts(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	k.Proxy().SetDelay(10*time.Millisecond, time.Millisecond)
	o := newOrderRun(t, orderCfg(t, k, certs), 20, 300)
	timeouts := k.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: stack.Topic, Err: kerr.RequestTimedOut, Count: 8})
	for seq := range o.n {
		o.round(seq)
	}
	o.wait()
	if timeouts.Hits() == 0 {
		t.Fatal("no request timed out")
	}
	o.check(k)
}
