package forwarder

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// refusedCodes are the produce errors that condemn a record, not Kafka: the
// broker will refuse the same bytes again, so retrying would stall the
// stream behind them for ever. The producer splits a refused batch and
// writes its records one at a time, so only the records at fault come back
// with the error (kafkaout.Producer); those go to the DLQ.
//
// Errors about the cluster rather than the record (authorization,
// UNSUPPORTED_FOR_MESSAGE_FORMAT, POLICY_VIOLATION...) that Kafka does not
// call retriable come back too, and are retried here with backoff: sending
// every record to the DLQ for those would empty the main topic instead of
// waiting for an operator. Retriable errors never come back: the producer
// retries them in place.
var refusedCodes = []kafka.Error{
	kafka.MessageSizeTooLarge, // MESSAGE_TOO_LARGE: over the topic's max.message.bytes
	kafka.RecordListTooLarge,  // RECORD_LIST_TOO_LARGE: the batch is over the segment size
	kafka.InvalidTimestamp,    // INVALID_TIMESTAMP: message.timestamp.*.max.ms (Kafka 4.0: 1h ahead)
	kafka.InvalidRecord,       // INVALID_RECORD: refused by the broker's record validation
	kafka.InvalidMessage,      // CORRUPT_MESSAGE
	kafka.InvalidMessageSize,  // INVALID_MESSAGE_SIZE
}

// refusal returns the error when err says Kafka refused the record(s)
// themselves (see refusedCodes), else nil.
func refusal(err error) error {
	for _, code := range refusedCodes {
		if errors.Is(err, code) {
			return err
		}
	}
	return nil
}

// feed hands records to the async writer in slices (fewer calls, bigger
// batches), retrying with backoff while Kafka cannot even be asked for
// partition metadata.
func (f *Forwarder) feed(ctx context.Context) {
	const maxSlice = 1024
	batch := make([]kafka.Message, 0, maxSlice)
	for {
		select {
		case m := <-f.in:
			batch = append(batch, m)
		case <-ctx.Done():
			return
		}
	fill:
		for len(batch) < maxSlice {
			select {
			case m := <-f.in:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		for {
			err := f.w.WriteMessages(ctx, batch...)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			f.writeFailed(len(batch), err)
			if !sleep(ctx, f.backoff()) {
				return
			}
		}
		clear(batch)
		batch = batch[:0]
	}
}

// completion is the producer's callback: Kafka acknowledged msgs, or
// refused them for good.
func (f *Forwarder) completion(msgs []kafka.Message, err error) {
	if err == nil {
		f.delivered(msgs)
		return
	}
	if refusal(err) != nil {
		// Refused for what they hold: to the DLQ, and the stream goes on.
		for _, m := range msgs {
			if r, ok := f.refused(m, err); ok {
				f.in <- r // cannot block: it replaces a record
			}
		}
		return
	}
	f.writeFailed(len(msgs), err)
	retry := make([]kafka.Message, len(msgs))
	copy(retry, msgs)
	backoff := f.backoff()
	// Not acked if the forwarder stops first: the broker redelivers them.
	f.spawn(func() {
		if sleep(f.work, backoff) {
			for _, m := range retry {
				f.in <- m // cannot block: at most MaxInFlight records exist
			}
		}
	})
}

// delivered records that Kafka acknowledged msgs: metrics, confirmations,
// and the MQTT acks (in arrival order, through the queue).
func (f *Forwarder) delivered(msgs []kafka.Message) {
	if f.failures.Swap(0) != 0 || !f.kafkaUp.Load() {
		f.log.Info("kafka accepting records again")
	}
	f.setKafka(true)
	now := time.Now().UnixNano()
	ps := make([]*pending, len(msgs))
	var produced, dlq int
	var newestTS int64
	for i := range msgs {
		p := msgs[i].WriterData.(*pending)
		ps[i] = p
		f.m.latency.Update(float64(now-p.recv) / 1e9)
		if p.dlq {
			dlq++
			if p.ackTo == nil {
				f.m.unconfirmable.Inc()
			}
		} else {
			produced++
			newestTS = max(newestTS, p.ts)
		}
	}
	f.m.produced.Add(produced)
	f.m.dlq.Add(dlq)
	if f.cfg.Confirm {
		f.conf.add(ps)
	}
	if newestTS != 0 {
		f.m.lag.Set(float64(now-newestTS) / 1e9)
	}
	f.queue.complete(ps)
}

// refused turns a record Kafka refused for good into its dead letter: a
// reading goes to the DLQ with the refusal in the error header; a dead
// letter the DLQ refused is sent again without its value; one refused even
// so is dropped, counted and logged (ok false), so it cannot stall the stream.
func (f *Forwarder) refused(m kafka.Message, err error) (r kafka.Message, ok bool) {
	p := m.WriterData.(*pending)
	f.m.refused.Inc()
	if !p.dlq {
		f.log.Warn("kafka refused a record; sending it to the DLQ", "mqtt_topic", header(m, "mqtt_topic"),
			"device_id", header(m, "device_id"), "seq", header(m, "seq"), "bytes", len(m.Value), "err", err)
		ackTo, seq := p.ackTo, p.seq
		r = f.dlqRecord(p, header(m, "mqtt_topic"), m.Value, &kafkaRefusal{err})
		p.ackTo, p.seq = ackTo, seq // the reading's own, already read
		return r, true
	}
	if len(m.Value) > 0 {
		f.log.Warn("the DLQ refused a dead letter; sending it again without its value", "mqtt_topic", header(m, "mqtt_topic"), "err", err)
		hs := append([]kafka.Header(nil), m.Headers...)
		for i := range hs {
			if hs[i].Key == "error" {
				hs[i].Value = append(append(append([]byte(nil), hs[i].Value...), "; the DLQ refused the value: "...), err.Error()...)
			}
		}
		if header(m, "original_bytes") == "" {
			hs = append(hs, kafka.Header{Key: "original_bytes", Value: strconv.AppendInt(nil, int64(len(m.Value)), 10)})
		}
		m.Headers, m.Value = hs, nil
		return m, true
	}
	// Acked on MQTT so the stream goes on, but not confirmed: the device
	// keeps the reading and sends it again after its confirm timeout.
	f.log.Error("the DLQ refused a dead letter even without its value; dropping it", "mqtt_topic", header(m, "mqtt_topic"),
		"err", err)
	f.m.dropped.Inc()
	f.queue.complete([]*pending{p})
	return kafka.Message{}, false
}

// kafkaRefusal is the error header of a reading Kafka refused.
type kafkaRefusal struct{ err error }

func (e *kafkaRefusal) Error() string { return "kafka refused the record: " + e.err.Error() }
func (e *kafkaRefusal) Unwrap() error { return e.err }

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func (f *Forwarder) writeFailed(n int, err error) {
	f.failures.Add(1)
	f.m.produceErrors.Add(n)
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
