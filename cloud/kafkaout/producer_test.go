package kafkaout_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/cloud/kafkaout"
	kit "github.com/edgepipe/sensorpipe/scripts/testkit"
	kafkakit "github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// outcomes collects what Completion and Retrying report.
type outcomes struct {
	mu       sync.Mutex
	acked    map[string]int // "key/seq" -> times acknowledged
	refused  map[string]error
	retries  int
	errs     []error // what each retry reported
	batches  int
	maxBatch int
}

func newOutcomes() *outcomes {
	return &outcomes{acked: map[string]int{}, refused: map[string]error{}}
}

func (o *outcomes) completion(msgs []kafka.Message, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batches++
	o.maxBatch = max(o.maxBatch, len(msgs))
	for _, m := range msgs {
		id := string(m.Key) + "/" + string(m.Value[:min(len(m.Value), 12)])
		if err != nil {
			o.refused[id] = err
			continue
		}
		o.acked[id]++
	}
}

func (o *outcomes) retrying(_ int, err error) {
	o.mu.Lock()
	o.retries++
	o.errs = append(o.errs, err)
	o.mu.Unlock()
}

// waitAckedOnce waits until n records are settled and fails unless every
// one was acknowledged exactly once and none refused.
func (o *outcomes) waitAckedOnce(t *testing.T, n int) {
	t.Helper()
	kit.WaitFor(t, "every record acknowledged", 60*time.Second, func() bool { return o.done() >= n })
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.refused) != 0 {
		t.Fatalf("%d records refused, e.g. %v", len(o.refused), o.refused)
	}
	for id, n := range o.acked {
		if n != 1 {
			t.Fatalf("record %s acknowledged %d times", id, n)
		}
	}
}

func (o *outcomes) done() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.acked) + len(o.refused)
}

func kafkaConfig(k *kafkakit.Cluster, certs *pki.PKI, maxBytes int) config.Kafka {
	return config.Kafka{
		Bootstrap: []string{k.Addr}, SecurityProtocol: config.SASLSSL, CAFile: certs.CAFile,
		APIKey: stack.KafkaUser, APISecret: config.Secret(stack.KafkaSecret),
		BatchSize: 10_000, BatchBytes: maxBytes, Compression: "snappy",
	}
}

func newProducer(t *testing.T, k *kafkakit.Cluster, certs *pki.PKI, o *outcomes, maxBytes int) *kafkaout.Producer {
	t.Helper()
	p, err := kafkaout.NewWriter(kafkaConfig(k, certs, maxBytes), "producer-test", o.completion, o.retrying)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// value is a record value whose first 12 bytes name its seq.
func value(seq int) []byte { return fmt.Appendf(nil, "%012d{\"payload\":true}", seq) }

// TestProducerKeepsOrderThroughOutage writes 20 keys x 400 records while
// Kafka is cut off for a second in the middle: every record is acknowledged,
// the producer retried instead of reporting failures, and each key's
// records sit in its partition in the order they were written (a retried
// batch may appear twice, in order: the first copy of every record comes
// after the first copy of the one before it). Close by, and with Kafka
// 20 ms away, where each partition has several requests on the wire when
// the connection is cut, or goes silent (bytes dropped: the requests on it
// time out after RequestTimeout and are sent again on a new connection).
func TestProducerKeepsOrderThroughOutage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		oneWay time.Duration
		fault  tcpproxy.Mode
	}{
		{"close, refused", 0, tcpproxy.Refuse},
		{"20ms away, pipelined, refused", 10 * time.Millisecond, tcpproxy.Refuse},
		{"20ms away, pipelined, silent", 10 * time.Millisecond, tcpproxy.Blackhole},
	} {
		t.Run(tc.name, func(t *testing.T) { keepsOrderThroughOutage(t, tc.oneWay, tc.fault) })
	}
}

func keepsOrderThroughOutage(t *testing.T, oneWay time.Duration, fault tcpproxy.Mode) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	k.Proxy().SetDelay(oneWay, oneWay/10)
	o := newOutcomes()
	p := newProducer(t, k, certs, o, 1<<20)
	const keys, perKey = 20, 400
	for seq := range perKey {
		if seq == perKey/2 {
			k.Proxy().SetMode(fault)
			time.AfterFunc(time.Second, k.Restore)
		}
		writeRound(p, keys, seq)
	}
	o.waitAckedOnce(t, keys*perKey)
	if o.retries == 0 {
		t.Error("no retry reported during the outage")
	}

	readInOrder(t, k, keys, perKey, o)
}

// writeRound writes value(seq) for keys dev-0..dev-(keys-1), then pauses 2 ms.
func writeRound(p *kafkaout.Producer, keys, seq int) {
	msgs := make([]kafka.Message, 0, keys)
	for key := range keys {
		msgs = append(msgs, kafka.Message{Topic: stack.Topic, Key: []byte("dev-" + strconv.Itoa(key)), Value: value(seq)})
	}
	for {
		err := p.WriteMessages(context.Background(), msgs...) // fails only while metadata cannot be fetched
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Millisecond)
}

// readInOrder reads the topic back and fails unless each key's records sit
// in one partition with the first copy of every seq after the first copy
// of the one before it, all perKey of them.
func readInOrder(t *testing.T, k *kafkakit.Cluster, keys, perKey int, o *outcomes) {
	t.Helper()
	recs := k.ReadN(t, stack.Topic, keys*perKey, 60*time.Second, time.Second)
	next := map[string]int{} // key -> next seq expected as a first copy
	partition := map[string]int{}
	for _, r := range recs {
		seq, err := strconv.Atoi(string(r.Value[:12]))
		if err != nil {
			t.Fatalf("bad value %q", r.Value)
		}
		if p, ok := partition[r.Key]; ok && p != r.Partition {
			t.Fatalf("key %s in partitions %d and %d", r.Key, p, r.Partition)
		}
		partition[r.Key] = r.Partition
		switch {
		case seq == next[r.Key]:
			next[r.Key]++
		case seq < next[r.Key]: // a copy from a retried batch
		default:
			t.Fatalf("key %s: seq %d before %d: the partition is out of order", r.Key, seq, next[r.Key])
		}
	}
	for key := range keys {
		if got := next["dev-"+strconv.Itoa(key)]; got != perKey {
			t.Errorf("dev-%d: %d records in order, want %d", key, got, perKey)
		}
	}
	t.Logf("%d records in Kafka for %d written; %d batches, largest %d; %d retries", len(recs), keys*perKey, o.batches, o.maxBatch, o.retries)
}

// TestProducerFollowsLeaderMove: three brokers; halfway through, every
// partition's leader moves to another broker. Requests to the old leaders
// fail (NOT_LEADER_OR_FOLLOWER) and are retried until the metadata names
// the new ones: every record acknowledged once, each key still in order.
func TestProducerFollowsLeaderMove(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafkaWith(t, certs, stack.KafkaOptions{Brokers: 3})
	o := newOutcomes()
	p := newProducer(t, k, certs, o, 1<<20)
	const keys, perKey = 20, 300
	moved := map[int32][2]int32{}
	for seq := range perKey {
		if seq == perKey/2 {
			for part := range int32(stack.Partitions) {
				from := k.Cluster.LeaderFor(stack.Topic, part)
				to := (from + 1) % 3
				if err := k.Cluster.MoveTopicPartition(stack.Topic, part, to); err != nil {
					t.Fatalf("move partition %d: %v", part, err)
				}
				moved[part] = [2]int32{from, to}
			}
		}
		writeRound(p, keys, seq)
	}
	o.waitAckedOnce(t, keys*perKey)
	for part, m := range moved {
		if got := k.Cluster.LeaderFor(stack.Topic, part); got != m[1] {
			t.Fatalf("partition %d led by %d, moved from %d to %d", part, got, m[0], m[1])
		}
	}
	if o.retries == 0 {
		t.Error("no retry reported: the old leaders took every request")
	}
	readInOrder(t, k, keys, perKey, o)
}

// TestProducerRequestTimeout: Kafka goes silent (bytes dropped, nothing
// closed) for 3 s while each partition has requests pipelined 20 ms away.
// The oldest request's RequestTimeout (1 s) ends its connection, and with
// it the requests behind it; they are sent again, in order, once Kafka
// answers: every record acknowledged once, each key in order.
func TestProducerRequestTimeout(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	k.Proxy().SetDelay(10*time.Millisecond, time.Millisecond)
	tr, err := kafkaout.Transport(kafkaConfig(k, certs, 1<<20), "producer-test")
	if err != nil {
		t.Fatal(err)
	}
	o := newOutcomes()
	p := kafkaout.NewProducer(kafka.TCP(k.Addr), tr, kafkaout.ProducerOptions{
		RequestTimeout: time.Second, Compression: kafka.Snappy,
		Completion: o.completion, Retrying: o.retrying,
	})
	t.Cleanup(func() { p.Close() })
	const keys, perKey = 20, 300
	for seq := range perKey {
		if seq == perKey/2 {
			k.Proxy().SetMode(tcpproxy.Blackhole)
			time.AfterFunc(3*time.Second, k.Restore)
		}
		writeRound(p, keys, seq)
	}
	o.waitAckedOnce(t, keys*perKey)
	o.mu.Lock()
	timedOut := slices.ContainsFunc(o.errs, func(err error) bool { return errors.Is(err, context.DeadlineExceeded) })
	o.mu.Unlock()
	if !timedOut {
		t.Errorf("no retry after a request timed out; retries reported: %v", o.errs)
	}
	readInOrder(t, k, keys, perKey, o)
}

// TestProducerRefusedRecordAlone: a batch Kafka refuses for good (one record
// in it is over max.message.bytes) comes back one record at a time: only
// that record carries the error, the others are written, in order.
func TestProducerRefusedRecordAlone(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	o := newOutcomes()
	p := newProducer(t, k, certs, o, 8<<20) // the three records fit one request
	big := make([]byte, 2<<20)
	if _, err := rand.Read(big); err != nil { // incompressible
		t.Fatal(err)
	}
	copy(big, value(1))
	msgs := []kafka.Message{
		{Topic: stack.Topic, Key: []byte("dev-x"), Value: value(0)},
		{Topic: stack.Topic, Key: []byte("dev-x"), Value: big},
		{Topic: stack.Topic, Key: []byte("dev-x"), Value: value(2)},
	}
	if err := p.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, "three outcomes", 30*time.Second, func() bool { return o.done() == 3 })
	err := o.refused["dev-x/"+string(value(1)[:12])]
	var pe *kafkaout.ProduceError
	if !errors.As(err, &pe) || !errors.Is(err, kafka.MessageSizeTooLarge) {
		t.Fatalf("big record: err = %v, want a *ProduceError wrapping MessageSizeTooLarge", err)
	}
	if len(o.refused) != 1 || len(o.acked) != 2 {
		t.Fatalf("acked %v, refused %v; want the two small records acked", o.acked, o.refused)
	}
	recs := k.ReadN(t, stack.Topic, 2, 10*time.Second, 500*time.Millisecond)
	if len(recs) != 2 || !bytes.Equal(recs[0].Value, value(0)) || !bytes.Equal(recs[1].Value, value(2)) {
		t.Fatalf("topic holds %d records, want seq 0 then 2", len(recs))
	}
}

// TestProducerClosed: WriteMessages after Close fails with ErrClosed.
func TestProducerClosed(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	p := newProducer(t, k, certs, newOutcomes(), 1<<20)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	err := p.WriteMessages(context.Background(), kafka.Message{Topic: stack.Topic, Key: []byte("k"), Value: value(0)})
	if !errors.Is(err, kafkaout.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}
