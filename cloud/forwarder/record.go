package forwarder

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// levels are the parts of a reading topic, {prefix}/{device_id}/{sensor}/reading.
type levels struct {
	devEnd int // len("{prefix}/{device_id}"): the device to confirm to
	device string
	sensor string
}

// splitTopic parses a reading topic; ok is false for any other shape. The
// prefix may span levels; device and sensor are the two before "reading".
func splitTopic(topic string) (l levels, ok bool) {
	rest, ok := strings.CutSuffix(topic, "/reading")
	if !ok {
		return levels{}, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return levels{}, false
	}
	j := strings.LastIndexByte(rest[:i], '/')
	if j <= 0 || j+1 == i || i+1 == len(rest) {
		return levels{}, false // empty prefix, device or sensor
	}
	return levels{devEnd: i, device: rest[j+1 : i], sensor: rest[i+1:]}, true
}

// looseSeq reads the seq of a payload that failed validation, so a poison
// reading can still be confirmed to its device (it is delivered: to the DLQ).
func looseSeq(payload []byte) (uint64, bool) {
	var w struct {
		Seq json.Number `json:"seq"`
	}
	if json.Unmarshal(payload, &w) != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(w.Seq.String(), 10, 64)
	if err != nil || n == 0 || n > confirm.MaxSeq {
		return 0, false
	}
	return n, true
}

// record builds p's Kafka record for one MQTT message: the reading on the
// main topic, or the payload on the DLQ when it does not decode.
func (f *Forwarder) record(p *pending, topic string, payload []byte) {
	r, err := reading.Decode(payload)
	if err != nil {
		f.dlqRecord(p, topic, payload, err)
		return
	}
	// The broker's ACLs tie a device to its topics, not to what its payload
	// claims: a reading whose names differ from its topic's is dead-lettered,
	// or one device could write (and pre-empt the seqs of) another.
	l, ok := splitTopic(topic)
	switch {
	case !ok:
		f.dlqRecord(p, topic, payload, fmt.Errorf("%w: topic %q is not {prefix}/{device_id}/{sensor}/reading", ErrTopicMismatch, topic))
		return
	case l.device != r.DeviceID:
		f.dlqRecord(p, topic, payload, fmt.Errorf("%w: device_id %q differs from the topic's device %q", ErrTopicMismatch, r.DeviceID, l.device))
		return
	case l.sensor != r.Sensor:
		f.dlqRecord(p, topic, payload, fmt.Errorf("%w: sensor %q differs from the topic's sensor %q", ErrTopicMismatch, r.Sensor, l.sensor))
		return
	}
	if ahead := time.Until(r.TS); ahead > f.cfg.MaxClockSkew {
		f.dlqRecord(p, topic, payload, fmt.Errorf("ts %s is %v ahead of the forwarder's clock, more than FORWARDER_MAX_CLOCK_SKEW=%v",
			r.TS.Format(time.RFC3339Nano), ahead.Round(time.Second), f.cfg.MaxClockSkew))
		return
	}
	p.ts = r.TS.UnixNano()
	// One allocation (pending) holds the headers and the key, seq and topic
	// bytes; append only allocates for names longer than pending.buf.
	buf := append(p.buf[:0], r.DeviceID...)
	dev := buf[:len(buf):len(buf)]
	buf = strconv.AppendUint(buf, r.Seq, 10)
	seq := buf[len(dev):len(buf):len(buf)]
	n := len(buf)
	buf = append(buf, topic...)
	mqttTopic := buf[n:len(buf):len(buf)]
	if r.Seq <= confirm.MaxSeq {
		p.ackTo, p.seq = mqttTopic[:l.devEnd:l.devEnd], r.Seq
	}
	p.hdrs = [4]kgo.RecordHeader{
		{Key: "mqtt_topic", Value: mqttTopic},
		{Key: "device_id", Value: dev},
		{Key: "seq", Value: seq},
		{Key: "forwarder_id", Value: f.idHeader},
	}
	p.rec = kgo.Record{
		Topic:     f.cfg.Kafka.Topic,
		Key:       dev,
		Value:     payload,
		Timestamp: r.TS,
		Headers:   p.hdrs[:],
		Context:   p,
	}
}

// dlqRecord builds the dead-letter record for a payload that failed
// validation. When the topic names a device and the payload a seq, the
// device is confirmed that seq once the DLQ has it.
func (f *Forwarder) dlqRecord(p *pending, topic string, payload []byte, err error) {
	p.dlq = true
	mqttTopic := []byte(topic)
	if l, ok := splitTopic(topic); ok {
		if seq, ok := looseSeq(payload); ok {
			p.ackTo, p.seq = mqttTopic[:l.devEnd:l.devEnd], seq
		}
	}
	hs := []kgo.RecordHeader{
		{Key: "error", Value: []byte(err.Error())},
		{Key: "mqtt_topic", Value: mqttTopic},
		{Key: "forwarder_id", Value: f.idHeader},
	}
	if len(payload) > f.cfg.DLQMaxBytes {
		hs = append(hs, kgo.RecordHeader{Key: "original_bytes", Value: strconv.AppendInt(nil, int64(len(payload)), 10)})
		payload = payload[:f.cfg.DLQMaxBytes]
	}
	f.log.Debug("invalid payload to DLQ", "mqtt_topic", topic, "err", err)
	p.rec = kgo.Record{
		Topic:     f.cfg.Kafka.DLQTopic,
		Key:       mqttTopic,
		Value:     payload,
		Timestamp: time.Now(),
		Headers:   hs,
		Context:   p,
	}
}
