package forwarder

import (
	"fmt"
	"strconv"
	"strings"
	"time"

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
