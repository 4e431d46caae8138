package forwarder

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// pending is one MQTT message on its way to Kafka, with its record.
//
// It is also the record's Context, so the producer's callback finds the
// message from the record without a map or a closure per record. The
// embedded context is Background: its Done is nil, so the producer never
// cancels the record (only Close fails what Kafka did not take).
type pending struct {
	context.Context
	rec kgo.Record

	ack    func() // paho's msg.Ack: sends the PUBACK
	recv   int64  // when it arrived (unix nanos), for the latency histogram
	ts     int64  // the reading's ts (unix nanos), for the lag gauge; 0 for DLQ
	dlq    bool
	status bool  // a heartbeat, for the status topic (or the DLQ): nothing to confirm
	weight int64 // payload bytes counted against Config.MaxInFlightBytes
	// ackTo is "{prefix}/{device_id}" of the topic the reading arrived on,
	// the device to confirm seq to once Kafka has the record; nil when the
	// topic or the seq cannot be read.
	ackTo []byte
	seq   uint64
	done  bool // guarded by ackQueue.mu

	// Storage for the record's headers, key and seq, so a reading costs one
	// allocation here rather than four.
	hdrs [4]kgo.RecordHeader
	buf  [112]byte
}

// ackQueue releases PUBACKs in arrival order although Kafka acknowledges
// partitions independently: a message is acked once it and every message
// that arrived before it are done.
type ackQueue struct {
	mu   sync.Mutex
	q    []*pending
	head int
	out  chan<- *pending // consumed by the acker; capacity >= max in flight, so sends never block
}

func (a *ackQueue) push(p *pending) {
	a.mu.Lock()
	a.q = append(a.q, p)
	a.mu.Unlock()
}

// complete marks ps done and hands every acknowledgeable message, in order, to out.
func (a *ackQueue) complete(ps []*pending) {
	a.mu.Lock()
	for _, p := range ps {
		p.done = true
	}
	for a.head < len(a.q) && a.q[a.head].done {
		a.out <- a.q[a.head]
		a.q[a.head] = nil
		a.head++
	}
	if a.head == len(a.q) {
		a.q, a.head = a.q[:0], 0
	} else if a.head > 4096 && a.head > len(a.q)/2 {
		n := copy(a.q, a.q[a.head:])
		clear(a.q[n:])
		a.q, a.head = a.q[:n], 0
	}
	a.mu.Unlock()
}

// oldestAge is the age in seconds of the oldest message not yet handed to
// the acker, 0 when there is none.
func (a *ackQueue) oldestAge() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.head == len(a.q) {
		return 0
	}
	return float64(time.Now().UnixNano()-a.q[a.head].recv) / 1e9
}
