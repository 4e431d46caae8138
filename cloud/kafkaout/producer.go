package kafkaout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/segmentio/kafka-go/protocol/produce"
)

// ErrClosed is returned by WriteMessages after Close.
var ErrClosed = errors.New("kafkaout: producer closed")

// ProducerOptions tune a Producer. Zero values take the defaults named.
type ProducerOptions struct {
	// MaxRecords and MaxBytes cap one Produce request (one partition's
	// batch): DefaultMaxRecords, DefaultMaxBytes. A batch holds what arrived
	// while the partition's previous request was in flight, so it grows
	// with the round trip up to these caps; a record larger than MaxBytes
	// is sent alone (Kafka judges it).
	MaxRecords int
	MaxBytes   int64
	// Compression of each batch (0: none).
	Compression kafka.Compression
	// RequestTimeout bounds one Produce round trip (DefaultRequestTimeout).
	RequestTimeout time.Duration
	// InFlight caps the Produce requests one partition has on the wire at
	// once (DefaultInFlight). They share one connection to the leader, so
	// Kafka appends them in the order they were sent.
	InFlight int
	// Linger: while a partition has requests in flight, its next batch
	// leaves when it is full, when the oldest record in it has waited
	// Linger (DefaultLinger), or when the answers are all back. With
	// nothing in flight a batch leaves at once.
	Linger time.Duration
	// Completion is called once per batch with its records after Kafka
	// acknowledged them (err == nil) or refused them for good (err: a
	// *ProduceError; a refused batch is split so that only the records at
	// fault come back with an error). It runs on the partition's goroutine:
	// the partition's next request waits for it, and it must not keep msgs.
	Completion func(msgs []kafka.Message, err error)
	// Retrying, if set, is called each time a request failed with an error
	// worth retrying (network, leader change, timeout: anything but a
	// refusal for good); the producer sends the same batch again after a
	// backoff (100 ms doubling to 5 s) and nothing behind it first.
	Retrying func(records int, err error)
}

// Defaults for ProducerOptions.
const (
	DefaultMaxRecords     = 10_000
	DefaultMaxBytes       = 1 << 20
	DefaultRequestTimeout = 10 * time.Second
	DefaultInFlight       = 5
	DefaultLinger         = 5 * time.Millisecond
)

// ProduceError is a batch Kafka refused for good (RecordErrors are its
// per-record reasons, by index, when the broker gave them).
type ProduceError struct {
	Err          error
	RecordErrors map[int]error
}

func (e *ProduceError) Error() string {
	if len(e.RecordErrors) == 0 {
		return e.Err.Error()
	}
	for _, re := range e.RecordErrors {
		return fmt.Sprintf("%v (%d records refused, e.g. %v)", e.Err, len(e.RecordErrors), re)
	}
	return e.Err.Error()
}

func (e *ProduceError) Unwrap() error { return e.Err }

// Producer writes records to Kafka asynchronously. Each partition keeps up
// to InFlight Produce requests on the wire, pipelined on one connection to
// its leader (brokerConn). With nothing in flight a batch leaves at once;
// while requests are in flight the records that arrive queue up and leave
// when the batch is full, when its oldest record has waited Linger, or when
// every answer is back. Close by, batches stay small and nothing waits for
// a timer; at a distance a record waits at most Linger plus one round trip
// instead of up to two round trips behind the request before it, and a
// partition carries InFlight batches per round trip.
//
// Order: Kafka takes one connection's requests in the order they were
// written, so a partition's records are appended in the order
// WriteMessages got them. When a request fails, the producer lets the
// requests behind it land, then settles them in order, resending the
// failed ones one at a time (with backoff) before anything new. A connection
// that breaks fails every request on it, and they are resent in order: a
// batch Kafka had appended before the break is written twice (duplicates,
// in order: the first copy of each record still follows the first copy of
// the one before). Two rare cases reorder, both when Kafka refuses a
// request and takes the next one on the same connection: a refusal for a
// transient reason of the partition (NOT_ENOUGH_REPLICAS while a replica
// rejoins, say), where the refused batch is appended after the next; and a
// refusal for good (a record over max.message.bytes), where the batch's
// other records are resent one by one after the next. A consumer that
// needs a device's order across such a moment sorts by seq, which every
// reading carries.
//
// It routes a record with the Java client's murmur2 on its key, and finds
// each partition's leader in Transport's metadata cache.
type Producer struct {
	// Addr and Transport reach the cluster (also usable for a kafka.Client
	// of the caller's own, e.g. a metadata probe).
	Addr      net.Addr
	Transport *kafka.Transport

	o        ProducerOptions
	balancer kafka.Murmur2Balancer

	ctx    context.Context // cancelled by Close: abandons requests and retries
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	parts  map[topicPartition]*partitionQueue
	ids    []int // 0..n-1, the partition list handed to the balancer

	connMu  sync.Mutex
	conns   map[string]*brokerConn // by broker address
	readers sync.WaitGroup         // the connections' read loops
	bufs    sync.Pool              // *bytes.Buffer for encoding requests
}

type topicPartition struct {
	topic     string
	partition int
}

// NewProducer returns a Producer sending to addr through tr.
func NewProducer(addr net.Addr, tr *kafka.Transport, o ProducerOptions) *Producer {
	if o.MaxRecords <= 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.InFlight <= 0 {
		o.InFlight = DefaultInFlight
	}
	if o.Linger <= 0 {
		o.Linger = DefaultLinger
	}
	if o.Completion == nil {
		o.Completion = func([]kafka.Message, error) {}
	}
	p := &Producer{
		Addr:      addr,
		Transport: tr,
		o:         o,
		parts:     map[topicPartition]*partitionQueue{},
		conns:     map[string]*brokerConn{},
	}
	p.bufs.New = func() any { return new(bytes.Buffer) }
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// WriteMessages queues msgs (each with its Topic set) and returns without
// waiting for Kafka; Completion reports each record's outcome. It fails
// only when the producer is closed or a topic's partition count cannot be
// learned (nothing was queued then).
func (p *Producer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	counts := make(map[string]int, 1)
	for i := range msgs {
		t := msgs[i].Topic
		if _, ok := counts[t]; ok {
			continue
		}
		n, err := p.partitions(ctx, t)
		if err != nil {
			return fmt.Errorf("kafkaout: partitions of %s: %w", t, err)
		}
		counts[t] = n
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if max := maxCount(counts); len(p.ids) < max {
		p.ids = make([]int, max)
		for i := range p.ids {
			p.ids[i] = i
		}
	}
	var last *partitionQueue
	for i := range msgs {
		m := &msgs[i]
		key := topicPartition{m.Topic, p.balancer.Balance(*m, p.ids[:counts[m.Topic]]...)}
		q := p.parts[key]
		if q == nil {
			q = &partitionQueue{key: key, wake: make(chan struct{}, 1)}
			p.parts[key] = q
			p.wg.Add(1)
			go p.run(q)
		}
		if q != last {
			if last != nil {
				last.mu.Unlock()
				last.signal()
			}
			q.mu.Lock()
			last = q
		}
		if len(q.msgs) == 0 {
			q.since = time.Now()
		}
		q.msgs = append(q.msgs, *m)
		q.size += recordSize(m)
	}
	last.mu.Unlock()
	last.signal()
	return nil
}

func maxCount(m map[string]int) int {
	n := 0
	for _, v := range m {
		n = max(n, v)
	}
	return n
}

// partitions asks Transport for the topic's partition count (answered from
// its metadata cache, refreshed every MetadataTTL).
func (p *Producer) partitions(ctx context.Context, topic string) (int, error) {
	t, _, err := p.topic(ctx, topic)
	if err != nil {
		return 0, err
	}
	return len(t.Partitions), nil
}

// topic is topic's metadata and the cluster's brokers, from Transport's
// cache: an error when the topic is unknown, has no partitions, or Kafka
// gave an error for it.
func (p *Producer) topic(ctx context.Context, topic string) (*metadataAPI.ResponseTopic, []metadataAPI.ResponseBroker, error) {
	r, err := p.Transport.RoundTrip(ctx, p.Addr, &metadataAPI.Request{TopicNames: []string{topic}})
	if err != nil {
		return nil, nil, err
	}
	res := r.(*metadataAPI.Response)
	for i := range res.Topics {
		t := &res.Topics[i]
		if t.Name != topic {
			continue
		}
		if t.ErrorCode != 0 {
			return nil, nil, kafka.Error(t.ErrorCode)
		}
		if len(t.Partitions) == 0 {
			break
		}
		return t, res.Brokers, nil
	}
	return nil, nil, kafka.UnknownTopicOrPartition
}

// Close abandons what is queued or in flight (no Completion for it: the
// caller never saw those records acknowledged) and waits for the
// partitions' goroutines to end.
func (p *Producer) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	// Closing the connections first also ends a write that waits for a
	// full socket buffer; no new one is dialed once ctx is cancelled.
	p.connMu.Lock()
	for _, c := range p.conns {
		c.fail(errConnClosed)
	}
	p.connMu.Unlock()
	p.wg.Wait()
	p.readers.Wait()
	p.Transport.CloseIdleConnections()
	return nil
}

// partitionQueue holds the records waiting for one partition's next request.
type partitionQueue struct {
	key   topicPartition
	mu    sync.Mutex
	msgs  []kafka.Message
	size  int64         // recordSize of msgs
	since time.Time     // when the oldest of msgs was queued
	wake  chan struct{} // cap 1: records were queued

	conn *brokerConn // the leader's connection, used by the partition's goroutine only; nil after a failure
}

func (q *partitionQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take moves up to max records (and about maxBytes, at least one record)
// from the queue into batch.
func (q *partitionQueue) take(batch []kafka.Message, maxRecords int, maxBytes int64) []kafka.Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	var size int64
	n := 0
	for n < len(q.msgs) && n < maxRecords {
		s := recordSize(&q.msgs[n])
		if n > 0 && size+s > maxBytes {
			break
		}
		size += s
		n++
	}
	q.size -= size
	batch = append(batch, q.msgs[:n]...)
	rest := copy(q.msgs, q.msgs[n:])
	clear(q.msgs[rest:])
	q.msgs = q.msgs[:rest]
	if cap(q.msgs) > 4*maxRecords && rest < maxRecords {
		q.msgs = append([]kafka.Message(nil), q.msgs...) // give back a burst's memory
	}
	return batch
}

// recordSize approximates a record's bytes in a batch (kafka-go's Message
// size estimate: key, value, headers and fixed overhead).
func recordSize(m *kafka.Message) int64 {
	n := 70 + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value) + 10
	}
	return int64(n)
}

// flight is one batch on the wire.
type flight struct {
	batch []kafka.Message
	call  *call
	conn  *brokerConn // nil when the request never went out
}

// run keeps up to InFlight of q's requests on the wire, settles them in
// order, and ends at Close.
func (p *Producer) run(q *partitionQueue) {
	defer p.wg.Done()
	var flights []*flight
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		// Send what may leave now; learn when the next batch may.
		var next time.Time
		for len(flights) < p.o.InFlight {
			batch, at := q.next(len(flights) == 0, p.o)
			if batch == nil {
				next = at
				break
			}
			flights = append(flights, p.start(q, batch))
		}
		var done <-chan struct{}
		if len(flights) > 0 {
			done = flights[0].call.done
			if d := flights[0].call.deadline; !d.IsZero() && (next.IsZero() || d.Before(next)) {
				next = d
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		} else {
			timer.Stop()
		}
		select {
		case <-q.wake:
		case <-timer.C:
			if len(flights) > 0 && !time.Now().Before(flights[0].call.deadline) {
				flights[0].expire()
			}
		case <-done:
			f := flights[0]
			if err := f.result(q.key); err == nil {
				p.o.Completion(f.batch, nil)
				clear(flights[:1])
				flights = flights[1:]
				continue
			}
			// A request failed: let the ones behind it land, then settle
			// each in order, retrying the failed ones one at a time.
			for _, f := range flights {
				if !p.settle(q, f.batch, f.wait(p.ctx, q.key)) {
					return
				}
			}
			clear(flights)
			flights = flights[:0]
		case <-p.ctx.Done():
			return
		}
	}
}

// next takes q's next batch if it may leave now: at once when the
// partition has nothing in flight (idle), when full, or when its oldest
// record has waited Linger. Otherwise it returns nil and when the queued
// records may leave (zero: nothing queued).
func (q *partitionQueue) next(idle bool, o ProducerOptions) ([]kafka.Message, time.Time) {
	q.mu.Lock()
	n, size, since := len(q.msgs), q.size, q.since
	q.mu.Unlock()
	if n == 0 {
		return nil, time.Time{}
	}
	if !idle && n < o.MaxRecords && size < o.MaxBytes && time.Since(since) < o.Linger {
		return nil, since.Add(o.Linger)
	}
	return q.take(nil, o.MaxRecords, o.MaxBytes), time.Time{}
}

// start encodes batch and writes it to its partition's leader without
// waiting for the answer.
func (p *Producer) start(q *partitionQueue, batch []kafka.Message) *flight {
	key := q.key
	c := q.conn
	if c == nil || !c.alive() {
		var err error
		if c, err = p.leaderConn(key); err != nil {
			return &flight{batch: batch, call: failed(err)}
		}
		q.conn = c
	}
	buf := p.bufs.Get().(*bytes.Buffer)
	defer p.bufs.Put(buf)
	req := &produce.Request{
		Acks:    int16(kafka.RequireAll),
		Timeout: int32(p.o.RequestTimeout / time.Millisecond),
		Topics: []produce.RequestTopic{{
			Topic: key.topic,
			Partitions: []produce.RequestPartition{{
				Partition: int32(key.partition),
				RecordSet: protocol.RecordSet{
					Version:    2,
					Attributes: protocol.Attributes(p.o.Compression) & 7,
					Records:    &messageRecords{msgs: batch},
				},
			}},
		}},
	}
	if err := c.encode(buf, req); err != nil {
		return &flight{batch: batch, call: failed(&ProduceError{Err: fmt.Errorf("encode: %w", err)})}
	}
	return &flight{batch: batch, call: c.send(buf.Bytes(), p.o.RequestTimeout), conn: c}
}

// expire kills the connection of a request that outlived its timeout: its
// answer, and those of the requests behind it, will not come.
func (f *flight) expire() {
	if f.conn != nil {
		f.conn.fail(fmt.Errorf("%w: no answer from %s in %v", context.DeadlineExceeded, f.conn.addr, f.call.timeout))
	}
}

// wait blocks until f is answered (or its connection dies, or its
// deadline passes, or ctx ends) and returns result.
func (f *flight) wait(ctx context.Context, key topicPartition) error {
	if d := f.call.deadline; !d.IsZero() {
		t := time.NewTimer(time.Until(d))
		defer t.Stop()
		select {
		case <-f.call.done:
		case <-t.C:
			f.expire()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	<-f.call.done
	return f.result(key)
}

// result reads an answered call: nil when Kafka appended the batch, a
// *ProduceError when it refused it for good, the error as it is otherwise
// (network, timeouts, errors Kafka calls retriable). CORRUPT_MESSAGE counts
// as given for good although Kafka calls it retriable: the same bytes
// (over TLS, or checked by TCP) fail the same check again, and retrying in
// place would stop the partition behind them for ever; split, the records
// that are fine go through on their own, as a Java producer's would after
// delivery.timeout.ms.
func (f *flight) result(key topicPartition) error {
	if f.call.err != nil {
		return f.call.err
	}
	for _, t := range f.call.res.Topics {
		for _, part := range t.Partitions {
			if t.Topic != key.topic || int(part.Partition) != key.partition {
				continue
			}
			if part.ErrorCode == 0 {
				return nil
			}
			ke := kafka.Error(part.ErrorCode)
			if ke.Temporary() && ke != kafka.InvalidMessage {
				return ke
			}
			pe := &ProduceError{Err: ke}
			if len(part.RecordErrors) > 0 {
				pe.RecordErrors = make(map[int]error, len(part.RecordErrors))
				for _, re := range part.RecordErrors {
					pe.RecordErrors[int(re.BatchIndex)] = fmt.Errorf("%w: %s", ke, re.BatchIndexErrorMessage)
				}
			}
			return pe
		}
	}
	return fmt.Errorf("kafkaout: the answer does not name %s/%d", key.topic, key.partition)
}

// settle finishes a batch whose first attempt ended with err: retries
// what is worth retrying, reports the outcome, and splits a batch Kafka
// refused for good so that only the records at fault come back with the
// error; false once the producer is closed.
func (p *Producer) settle(q *partitionQueue, batch []kafka.Message, err error) bool {
	if err != nil {
		err = p.retry(q, batch, err)
	}
	if p.ctx.Err() != nil {
		return false
	}
	if err == nil || len(batch) == 1 {
		p.o.Completion(batch, err)
		return true
	}
	for i := range batch { // one at a time, in order
		one := batch[i : i+1]
		err := p.retry(q, one, p.produce(q, one))
		if p.ctx.Err() != nil {
			return false
		}
		p.o.Completion(one, err)
	}
	return true
}

// retry sends batch again, alone and with backoff (100 ms doubling to 5 s),
// while err is worth retrying; it returns nil, a *ProduceError, or the
// context's error at Close.
func (p *Producer) retry(q *partitionQueue, batch []kafka.Message, err error) error {
	backoff := 100 * time.Millisecond
	for {
		var pe *ProduceError
		if err == nil || errors.As(err, &pe) || p.ctx.Err() != nil {
			return err
		}
		q.conn = nil // look the leader up again: it may have moved
		if p.o.Retrying != nil {
			p.o.Retrying(len(batch), err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			return p.ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
		err = p.produce(q, batch)
	}
}

// produce is one Produce round trip, waited for.
func (p *Producer) produce(q *partitionQueue, batch []kafka.Message) error {
	return p.start(q, batch).wait(p.ctx, q.key)
}

// leaderConn returns the connection to key's leader, dialing it if there
// is none or it died. Leaders come from Transport's metadata cache
// (refreshed every MetadataTTL), so after a leader change the requests to
// the old leader fail and are retried until the cache names the new one. A
// partition keeps the connection it got until a request on it fails.
func (p *Producer) leaderConn(key topicPartition) (*brokerConn, error) {
	addr, err := p.leader(key)
	if err != nil {
		return nil, err
	}
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if c := p.conns[addr]; c != nil && c.alive() {
		return c, nil
	}
	if p.ctx.Err() != nil {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.o.RequestTimeout)
	defer cancel()
	c, err := dialBroker(ctx, p.Transport, addr, &p.readers)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

// leader is the address of key's leader.
func (p *Producer) leader(key topicPartition) (string, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.o.RequestTimeout)
	defer cancel()
	t, brokers, err := p.topic(ctx, key.topic)
	if err != nil {
		return "", fmt.Errorf("metadata of %s/%d: %w", key.topic, key.partition, err)
	}
	for _, part := range t.Partitions {
		if int(part.PartitionIndex) != key.partition {
			continue
		}
		for _, b := range brokers {
			if b.NodeID == part.LeaderID {
				return net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))), nil
			}
		}
		return "", fmt.Errorf("%s/%d: %w", key.topic, key.partition, kafka.LeaderNotAvailable)
	}
	return "", fmt.Errorf("%s/%d: %w", key.topic, key.partition, kafka.UnknownTopicOrPartition)
}

// messageRecords reads kafka.Messages as the records of a Produce request
// (what kafka-go's Writer does internally, without copying the messages).
type messageRecords struct {
	msgs   []kafka.Message
	index  int
	record kafka.Record
	key    bytesReader
	value  bytesReader
}

func (r *messageRecords) ReadRecord() (*kafka.Record, error) {
	if r.index >= len(r.msgs) {
		return nil, io.EOF
	}
	m := &r.msgs[r.index]
	r.index++
	r.record = kafka.Record{Time: m.Time, Headers: m.Headers}
	if m.Key != nil {
		r.key.Reset(m.Key)
		r.record.Key = &r.key
	}
	if m.Value != nil {
		r.value.Reset(m.Value)
		r.record.Value = &r.value
	}
	return &r.record, nil
}

type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }
