package forwarder

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// produce hands p's record to the producer, or holds it behind records
// waiting to be produced again after a cluster error (holdQueue), so a
// partition keeps its order across that retry.
func (f *Forwarder) produce(p *pending) {
	f.hold.mu.Lock()
	defer f.hold.mu.Unlock()
	if len(f.hold.held) > 0 {
		f.hold.held = append(f.hold.held, p)
		return
	}
	// Under the lock, so a release cannot slip in between. franz-go calls
	// the promise from Produce itself only for a record refused before it
	// is buffered (too large: a record-level refusal) or a closed client,
	// and neither path takes hold.mu.
	f.cl.Produce(context.Background(), &p.rec, f.promise)
}

// holdQueue holds records while the forwarder backs off from a refusal
// Kafka gives for a reason of the cluster (authorization, policy): the
// refused records and every record that arrives meanwhile, released in
// order after the backoff.
type holdQueue struct {
	mu    sync.Mutex
	held  []*pending
	armed bool // a release is scheduled
}

// holdAndRetry queues p (refused for a cluster reason) and schedules the
// release of everything held after a backoff.
func (f *Forwarder) holdAndRetry(p *pending) {
	f.hold.mu.Lock()
	f.hold.held = append(f.hold.held, p)
	arm := !f.hold.armed
	f.hold.armed = true
	f.hold.mu.Unlock()
	if !arm {
		return
	}
	backoff := f.backoff()
	// Not acked if the forwarder stops first: the broker redelivers them.
	f.spawn(func() {
		if sleep(f.work, backoff) {
			f.release()
		}
	})
}

// release produces every held record, in the order held.
func (f *Forwarder) release() {
	f.hold.mu.Lock()
	defer f.hold.mu.Unlock()
	held := f.hold.held
	f.hold.held, f.hold.armed = nil, false
	for _, p := range held {
		f.cl.Produce(context.Background(), &p.rec, f.promise)
	}
}

// promise is the producer's callback, once per record: Kafka has it, or
// refused it for good.
func (f *Forwarder) promise(r *kgo.Record, err error) {
	p := r.Context.(*pending)
	switch {
	case err == nil:
		f.delivered(p)
	case f.closing.Load() || errors.Is(err, kgo.ErrClientClosed):
		// Abandoned at shutdown: not acked, the broker delivers it again.
	case p.status && !p.dlq && f.statusMissing.Load():
		// Purged: the status topic does not exist (checkStatusTopic).
		f.statusDropped(p)
	case recordLevel(err):
		// This record, or another of its partition's batch, is refused
		// for what it holds: find out alone.
		f.probe.add(r.Topic, r.Partition, p, err)
	default:
		f.writeFailed(1, err)
		f.holdAndRetry(p)
	}
}

// delivered records that Kafka acknowledged p: metrics, confirmation, and
// the MQTT ack (in arrival order, through the queue).
func (f *Forwarder) delivered(p *pending) {
	if !f.kafkaUp.Load() || f.failures.Load() != 0 {
		if f.failures.Swap(0) != 0 || !f.kafkaUp.Load() {
			f.log.Info("kafka accepting records again")
		}
		f.setKafka(true)
	}
	now := time.Now().UnixNano()
	f.m.latency.Update(float64(now-p.recv) / 1e9)
	switch {
	case p.dlq:
		f.m.dlq.Inc()
		if p.ackTo == nil && !p.status {
			f.m.unconfirmable.Inc()
		}
	case p.status:
		f.m.relayed.Inc()
	default:
		f.m.produced.Inc()
		f.m.lag.Set(float64(now-p.ts) / 1e9)
	}
	ps := [1]*pending{p}
	if f.cfg.Confirm {
		f.conf.add(ps[:])
	}
	f.queue.complete(ps[:])
}

// prober sends the records of a batch Kafka refused for what a record in
// it holds, one at a time, on a client of its own: alone in its batch, a
// record refused again is the one at fault, and only it goes to the DLQ.
// Each partition is probed by one goroutine, in order; partitions in
// parallel.
type prober struct {
	f  *Forwarder
	cl *kgo.Client

	mu    sync.Mutex
	parts map[partitionKey][]suspect // records waiting, by the partition that refused them
}

type partitionKey struct {
	topic     string
	partition int32
}

type suspect struct {
	p   *pending
	err error // why its batch was refused
}

// add queues p, from a batch of topic/partition refused with err.
func (pr *prober) add(topic string, partition int32, p *pending, err error) {
	key := partitionKey{topic, partition}
	pr.mu.Lock()
	q, running := pr.parts[key]
	pr.parts[key] = append(q, suspect{p, err})
	pr.mu.Unlock()
	if !running {
		pr.f.spawn(func() { pr.run(key) })
	}
}

// run probes key's suspects until none is left or the forwarder stops.
func (pr *prober) run(key partitionKey) {
	for {
		pr.mu.Lock()
		q := pr.parts[key]
		if len(q) == 0 {
			delete(pr.parts, key)
			pr.mu.Unlock()
			return
		}
		s := q[0]
		q[0] = suspect{}
		pr.parts[key] = q[1:]
		pr.mu.Unlock()
		if !pr.one(s) {
			return
		}
	}
}

// one sends s alone until Kafka takes it, or it goes to the DLQ; false
// once the forwarder stops.
func (pr *prober) one(s suspect) bool {
	f := pr.f
	for failures := 0; ; failures++ {
		err := pr.cl.ProduceSync(f.work, &s.p.rec).FirstErr()
		switch {
		case err == nil:
			f.delivered(s.p)
			return true
		case f.closing.Load() || f.work.Err() != nil || errors.Is(err, kgo.ErrClientClosed):
			return false
		case recordLevel(err) && !s.p.dlq:
			// Refused alone: this is the one at fault.
			f.deadLetter(s.p, err)
			return true
		case recordLevel(err):
			f.dlqRefused(s.p, err)
		default:
			f.writeFailed(1, err)
		}
		if !sleep(f.work, min(100*time.Millisecond<<min(failures, 6), 5*time.Second)) {
			return false
		}
	}
}

// deadLetter sends a reading Kafka refused for good to the DLQ with the
// refusal in its error header; the stream goes on. The device is confirmed
// once the DLQ has it (with its value).
func (f *Forwarder) deadLetter(p *pending, err error) {
	f.m.refused.Inc()
	topic := header(&p.rec, "mqtt_topic")
	f.log.Warn("kafka refused a record; sending it to the DLQ", "mqtt_topic", topic,
		"device_id", header(&p.rec, "device_id"), "seq", header(&p.rec, "seq"), "bytes", len(p.rec.Value), "err", err)
	ackTo, seq := p.ackTo, p.seq
	f.dlqRecord(p, topic, p.rec.Value, &kafkaRefusal{err})
	p.ackTo, p.seq = ackTo, seq // the reading's own, already read
	f.produce(p)
}

// dlqRefused counts a dead letter the DLQ refused, alone. That is a problem
// of the cluster (the DLQ's max.message.bytes, schema validation), not of
// the reading: it is never acked on MQTT nor confirmed (the forwarder
// cannot tell a device in delivery: broker, which keeps nothing after the
// PUBACK, from one in delivery: kafka), and the prober retries it with
// backoff. It holds the head of the ack queue, so /readyz turns red after
// stallAfter and the stream stops at FORWARDER_MAX_IN_FLIGHT until the DLQ
// takes it.
func (f *Forwarder) dlqRefused(p *pending, err error) {
	f.m.dlqRefused.Inc()
	f.writeFailed(1, err)
	now := time.Now().UnixNano()
	if last := f.lastDLQLog.Load(); now-last > int64(10*time.Second) && f.lastDLQLog.CompareAndSwap(last, now) {
		f.log.Error("the DLQ refused a dead letter; holding the reading (not acked, not confirmed) and retrying: check the DLQ topic",
			"dlq", p.rec.Topic, "mqtt_topic", header(&p.rec, "mqtt_topic"), "bytes", len(p.rec.Value), "err", err)
	}
}

// kafkaRefusal is the error header of a reading Kafka refused.
type kafkaRefusal struct{ err error }

func (e *kafkaRefusal) Error() string { return "kafka refused the record: " + e.err.Error() }
func (e *kafkaRefusal) Unwrap() error { return e.err }

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// writeFailed counts n records (0: a connection) whose write failed and
// that are retried, turns /readyz red until Kafka takes a record again,
// and logs at most every 10 s.
func (f *Forwarder) writeFailed(n int, err error) {
	f.failures.Add(1)
	f.m.produceErrors.Inc()
	f.setKafka(false)
	now := time.Now().UnixNano()
	if last := f.lastErrLg.Load(); now-last > int64(10*time.Second) && f.lastErrLg.CompareAndSwap(last, now) {
		f.log.Warn("kafka write failed; holding MQTT acks and retrying", "records", n, "err", err)
	}
}

func (f *Forwarder) setKafka(up bool) {
	if f.kafkaUp.Swap(up) != up {
		f.m.kafkaUp.Set(map[bool]float64{false: 0, true: 1}[up])
	}
}

// backoff grows with consecutive failures: 100ms, 200ms, ... up to 5s.
func (f *Forwarder) backoff() time.Duration {
	n := min(f.failures.Load(), 6)
	return min(100*time.Millisecond<<n, 5*time.Second)
}
