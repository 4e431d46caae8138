package forwarder

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/kafkaout"
)

// The devices' heartbeats ({prefix}/{device_id}/status, retained) are
// relayed to the compacted status topic (KAFKA_STATUS_TOPIC), keyed by the
// device the topic names, on the path readings take: the same producer,
// the MQTT ack only after Kafka acked, the DLQ for what does not decode.
// Nothing is confirmed to the device for a heartbeat.
//
// The status topic is optional where the readings' topic is not: while it
// does not exist, heartbeats are acked and counted without being relayed
// (forwarder_status_dropped_total), so a cluster set up before the relay
// never stalls the readings behind a heartbeat waiting for a topic. They
// are soft state: each device sends its next within an interval, and the
// broker hands the retained ones over again at the next subscribe.

// statusDevice is the device a heartbeat's topic names, {prefix}/{device_id}/status;
// ok is false for any other topic, or when heartbeats are not relayed.
func (f *Forwarder) statusDevice(topic string) (string, bool) {
	if f.cfg.Kafka.StatusTopic == "" {
		return "", false
	}
	rest, ok := strings.CutSuffix(topic, "/status")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 || i+1 == len(rest) {
		return "", false // no prefix, or no device
	}
	return rest[i+1:], true
}

// statusRecord builds p's record for a heartbeat of device dev: the
// payload as the device sent it, on the status topic, keyed by the device
// the topic names (the broker's ACLs tie a device to its topics; the
// payload names no device, and a consumer must not read one from it). A
// payload heartbeat.Decode refuses, or a device name a consumer could not
// store, goes to the DLQ.
//
// The record's time is when the forwarder received the heartbeat: the
// device's clock may not be set, and a live heartbeat is news of the
// device now. A retained copy is not; it says so in its header.
func (f *Forwarder) statusRecord(p *pending, topic, dev string, payload []byte, retained bool) {
	p.status = true
	if err := reading.CheckName(dev); err != nil {
		f.dlqRecord(p, topic, payload, fmt.Errorf("status topic %q: device: %w", topic, err))
		return
	}
	if _, err := heartbeat.Decode(payload); err != nil {
		f.dlqRecord(p, topic, payload, err)
		return
	}
	now := time.Now()
	p.ts = now.UnixNano()
	key := []byte(dev)
	p.hdrs = [4]kgo.RecordHeader{
		{Key: "mqtt_topic", Value: []byte(topic)},
		{Key: "device_id", Value: key},
		{Key: "forwarder_id", Value: f.idHeader},
		{Key: kafkaout.HeaderRetained, Value: strconv.AppendBool(nil, retained)},
	}
	p.rec = kgo.Record{
		Topic:     f.cfg.Kafka.StatusTopic,
		Key:       key,
		Value:     payload,
		Timestamp: now,
		Headers:   p.hdrs[:],
		Context:   p,
	}
}

// checkStatusTopic asks Kafka whether the status topic exists; first is
// true the first time it is asked. It returns false when Kafka did not
// answer (asked again later). A missing topic turns the relay off
// (heartbeats acked, not relayed) and fails what waits for it in the
// producer; once the topic exists, the relay is on again.
func (f *Forwarder) checkStatusTopic(ctx context.Context, first bool) bool {
	topic := f.cfg.Kafka.StatusTopic
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	meta, err := probeTopics(pctx, f.cl, topic)
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		if !f.statusMissing.Swap(true) {
			f.log.Error("kafka status topic does not exist: heartbeats are acked and not relayed until it does; "+
				"create it with cleanup.policy=compact, or set KAFKA_STATUS_TOPIC=off", "topic", topic)
		}
		// Every time: a heartbeat handed to the producer just before the
		// relay turned off would wait for the topic for ever.
		f.cl.PurgeTopicsFromProducing(topic)
		return true
	case err != nil:
		return false
	}
	if f.statusMissing.Swap(false) {
		f.log.Info("kafka status topic exists: relaying heartbeats", "topic", topic)
		first = true
	}
	if first {
		f.checkDurability(pctx, meta)
	}
	return true
}

// statusDropped acks p, a heartbeat, without relaying it: the status
// topic does not exist.
func (f *Forwarder) statusDropped(p *pending) {
	f.m.statusDropped.Inc()
	p.status = true
	f.queue.complete([]*pending{p})
}
