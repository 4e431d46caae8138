package kafkaout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
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

// Producer writes records to Kafka asynchronously with at most one Produce
// request in flight per partition. While a partition's request waits for
// Kafka, the records that arrive for that partition queue up and leave
// together in its next request the moment the answer is back: at a
// distance batches grow with the round trip by themselves, close by they
// stay small, and no record waits for a timer.
//
// Order: records of one partition are written in the order WriteMessages
// got them. A failed request is retried (same records, same order) before
// anything queued behind it is sent, so a retry cannot reorder a partition.
// A retry after a timeout or a broken connection may write the batch twice
// (Kafka may have appended the first attempt): duplicates, in order.
//
// It routes a record with the Java client's murmur2 on its key, and sends
// each request to the partition's leader through Transport (which caches
// the cluster's metadata).
type Producer struct {
	// Addr and Transport reach the cluster (also usable for a kafka.Client
	// of the caller's own, e.g. a metadata probe).
	Addr      net.Addr
	Transport *kafka.Transport

	o        ProducerOptions
	client   *kafka.Client
	balancer kafka.Murmur2Balancer

	ctx    context.Context // cancelled by Close: abandons requests and retries
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	parts  map[topicPartition]*partitionQueue
	ids    []int // 0..n-1, the partition list handed to the balancer
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
	if o.Completion == nil {
		o.Completion = func([]kafka.Message, error) {}
	}
	p := &Producer{
		Addr:      addr,
		Transport: tr,
		o:         o,
		client:    &kafka.Client{Addr: addr, Transport: tr, Timeout: o.RequestTimeout},
		parts:     map[topicPartition]*partitionQueue{},
	}
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
		q.msgs = append(q.msgs, *m)
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
	r, err := p.Transport.RoundTrip(ctx, p.Addr, &metadataAPI.Request{TopicNames: []string{topic}})
	if err != nil {
		return 0, err
	}
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name == topic {
			if t.ErrorCode != 0 {
				return 0, kafka.Error(t.ErrorCode)
			}
			if len(t.Partitions) == 0 {
				return 0, kafka.UnknownTopicOrPartition
			}
			return len(t.Partitions), nil
		}
	}
	return 0, kafka.UnknownTopicOrPartition
}

// Close abandons what is queued or in flight (no Completion for it: the
// caller never saw those records acknowledged) and waits for the
// partitions' goroutines to end.
func (p *Producer) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	p.Transport.CloseIdleConnections()
	return nil
}

// partitionQueue holds the records waiting for one partition's next request.
type partitionQueue struct {
	key  topicPartition
	mu   sync.Mutex
	msgs []kafka.Message
	wake chan struct{} // cap 1: records were queued
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

// run sends q's batches one at a time until Close.
func (p *Producer) run(q *partitionQueue) {
	defer p.wg.Done()
	var batch []kafka.Message
	for {
		select {
		case <-q.wake:
		case <-p.ctx.Done():
			return
		}
		for {
			batch = q.take(batch[:0], p.o.MaxRecords, p.o.MaxBytes)
			if len(batch) == 0 {
				break
			}
			if !p.deliver(q.key, batch) {
				return
			}
			clear(batch)
		}
	}
}

// deliver writes batch, retrying what is worth retrying, and reports the
// outcome; false once the producer is closed.
func (p *Producer) deliver(key topicPartition, batch []kafka.Message) bool {
	err := p.send(key, batch)
	if p.ctx.Err() != nil {
		return false
	}
	if err == nil || len(batch) == 1 {
		p.o.Completion(batch, err)
		return true
	}
	// Refused for good: one record at a time, in order, so only the
	// records at fault come back with the error.
	for i := range batch {
		one := batch[i : i+1]
		err := p.send(key, one)
		if p.ctx.Err() != nil {
			return false
		}
		p.o.Completion(one, err)
	}
	return true
}

// send writes batch, retrying errors worth retrying with backoff until it
// succeeds, Kafka refuses it for good (a *ProduceError), or Close.
func (p *Producer) send(key topicPartition, batch []kafka.Message) error {
	backoff := 100 * time.Millisecond
	for {
		err := p.produce(key, batch)
		if err == nil || p.ctx.Err() != nil {
			return err
		}
		var pe *ProduceError
		if errors.As(err, &pe) {
			return err
		}
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
	}
}

// produce is one Produce round trip. Errors Kafka gives for good come back
// as *ProduceError; the rest (network, timeouts, errors Kafka calls
// retriable) as they are. CORRUPT_MESSAGE counts as given for good although
// Kafka calls it retriable: the same bytes (over TLS, or checked by TCP)
// fail the same check again, and retrying in place would stop the partition
// behind them for ever; split, the records that are fine go through on
// their own, as a Java producer's would after delivery.timeout.ms.
func (p *Producer) produce(key topicPartition, batch []kafka.Message) error {
	ctx, cancel := context.WithTimeout(p.ctx, p.o.RequestTimeout)
	defer cancel()
	res, err := p.client.Produce(ctx, &kafka.ProduceRequest{
		Topic:        key.topic,
		Partition:    key.partition,
		RequiredAcks: kafka.RequireAll,
		Compression:  p.o.Compression,
		Records:      &messageRecords{msgs: batch},
	})
	if err != nil {
		return err
	}
	if res.Error == nil {
		return nil
	}
	var ke kafka.Error
	if errors.As(res.Error, &ke) && (!ke.Temporary() || ke == kafka.InvalidMessage) {
		return &ProduceError{Err: res.Error, RecordErrors: res.RecordErrors}
	}
	return res.Error
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
