package forwarder

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/cloud/kafkaout"
)

// recordCodes are the produce errors that condemn a record, not Kafka: the
// broker will refuse the same bytes again, so retrying would stall the
// stream behind them for ever. This is the one list of them. franz-go
// fails every record buffered for the partition with the error of the
// batch Kafka refused, so the forwarder cannot tell which record is at
// fault: it sends each alone (prober) and dead-letters only the ones
// refused alone.
//
// Errors about the cluster rather than the record (authorization,
// POLICY_VIOLATION, UNSUPPORTED_FOR_MESSAGE_FORMAT...) that Kafka does not
// call retriable are not on the list: the records are produced again
// after a backoff, in order, while /readyz turns red (sending every record
// to the DLQ for those would empty the main topic instead of waiting for
// an operator). Retriable errors never reach the forwarder: franz-go
// retries them itself, in order, without duplicates (idempotence).
//
// CORRUPT_MESSAGE is on the list although Kafka calls it retriable: the
// same bytes fail the same check again (franz-go does not retry it either).
var recordCodes = []*kerr.Error{
	kerr.MessageTooLarge,    // over the topic's max.message.bytes (or KAFKA_BATCH_BYTES, checked by the client)
	kerr.RecordListTooLarge, // the batch is over the segment size
	kerr.InvalidTimestamp,   // message.timestamp.*.max.ms (Kafka 4.0: 1h ahead)
	kerr.InvalidRecord,      // refused by the broker's record validation (schema validation, compaction without key)
	kerr.CorruptMessage,     // CRC or encoding check failed
}

// recordLevel reports whether err is a refusal of the record itself (see
// recordCodes).
func recordLevel(err error) bool {
	for _, code := range recordCodes {
		if errors.Is(err, code) {
			return true
		}
	}
	return false
}

// Producer settings that are not configuration.
const (
	// produceTimeout is the broker's own ack timeout in each Produce
	// request (acks=all waits for the in-sync replicas); the client's read
	// deadline adds RequestTimeoutOverhead to it, so Kafka's
	// REQUEST_TIMED_OUT arrives before the client gives up on the
	// connection.
	produceTimeout = 10 * time.Second
	// stallAfter is how long the oldest message may wait for Kafka before
	// /readyz turns red although Kafka answers: records refused for a
	// cluster reason (authorization, policy, a DLQ that refuses dead
	// letters) or waiting for a topic that does not exist.
	stallAfter = 15 * time.Second
)

// codec maps KAFKA_COMPRESSION to franz-go's codec.
func codec(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

// partitioner is the Java client's default for keyed records: murmur2 of
// the key, masked positive, modulo the partition count. Every record we
// write has a key (device_id, or the MQTT topic for a dead letter), so a
// device's readings share one partition whichever client wrote them.
func partitioner() kgo.Partitioner { return kgo.StickyKeyPartitioner(nil) }

// producerOpts are the forwarder's producer settings on top of the shared
// TLS and SASL ones: idempotent (franz-go's default: acks=all, up to 5
// requests in flight per broker, sequence numbers so Kafka drops a retry's
// duplicate and refuses a gap, which keeps each partition in order through
// retries, reconnects and leader moves), the Java partitioner, a buffer no
// larger than the forwarder's in-flight window, and topics that do not
// exist waited for rather than failed.
func producerOpts(cfg *config.Config, clientID string, hooks ...kgo.Hook) ([]kgo.Opt, error) {
	opts, err := kafkaout.ClientOpts(cfg.Kafka, clientID)
	if err != nil {
		return nil, err
	}
	return append(opts,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(partitioner()),
		kgo.ProducerBatchCompression(codec(cfg.Kafka.Compression)),
		kgo.ProducerBatchMaxBytes(int32(cfg.Kafka.BatchBytes)),
		kgo.ProducerLinger(cfg.Kafka.BatchTimeout),
		// The window (FORWARDER_MAX_IN_FLIGHT) bounds the records that
		// exist, so Produce never blocks on a full buffer.
		kgo.MaxBufferedRecords(cfg.MaxInFlight),
		kgo.ProduceRequestTimeout(produceTimeout),
		// A topic that does not exist: wait for an operator to create it
		// (/readyz red, the probe logs it) instead of failing the records.
		kgo.UnknownTopicRetries(-1),
		kgo.WithHooks(hooks...),
	), nil
}

// kafkaHooks tell the forwarder when a connection to Kafka fails, for
// /readyz and the error counter: franz-go retries the request itself.
type kafkaHooks struct{ f *Forwarder }

var (
	_ kgo.HookBrokerConnect = kafkaHooks{}
	_ kgo.HookBrokerWrite   = kafkaHooks{}
	_ kgo.HookBrokerRead    = kafkaHooks{}
)

func (h kafkaHooks) OnBrokerConnect(m kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.f.writeFailed(0, fmt.Errorf("connect to %s: %w", net.JoinHostPort(m.Host, fmt.Sprint(m.Port)), err))
	}
}

func (h kafkaHooks) OnBrokerWrite(m kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil && key == int16(kmsg.Produce) {
		h.f.writeFailed(0, fmt.Errorf("write to broker %d: %w", m.NodeID, err))
	}
}

func (h kafkaHooks) OnBrokerRead(m kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil && key == int16(kmsg.Produce) {
		h.f.writeFailed(0, fmt.Errorf("read from broker %d: %w", m.NodeID, err))
	}
}

// probeTopics asks Kafka for the topics' metadata: an error when Kafka
// cannot be reached or a topic does not exist.
func probeTopics(ctx context.Context, cl *kgo.Client, topics ...string) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			name := ""
			if t.Topic != nil {
				name = *t.Topic
			}
			return nil, fmt.Errorf("topic %s: %w", name, err)
		}
	}
	return resp, nil
}

// durability is what a confirmation of a record on topic rests on: with
// acks=all, Kafka acknowledges once the in-sync replicas have the record,
// and refuses the write while fewer than min.insync.replicas are in sync.
type durability struct {
	topic   string
	rf      int    // replication factor (fewest replicas of any partition)
	minISR  int    // min.insync.replicas; 0 when Kafka did not say
	cleanup string // cleanup.policy ("delete", "compact", "compact,delete"); "" when Kafka did not say
}

// compacted reports whether a cleanup.policy keeps each key's latest record.
func compacted(policy string) bool {
	for _, p := range strings.Split(policy, ",") {
		if strings.TrimSpace(p) == "compact" {
			return true
		}
	}
	return false
}

// warning says why a confirmation could rest on one copy of the record, or
// why writes will be refused; "" when neither.
func (d durability) warning() string {
	switch {
	case d.rf < 2:
		return fmt.Sprintf("topic %s has replication factor %d: a confirmed reading rests on one broker's disk, and is lost with it", d.topic, d.rf)
	case d.minISR > d.rf:
		return fmt.Sprintf("topic %s has min.insync.replicas=%d above its replication factor %d: Kafka refuses every write (NOT_ENOUGH_REPLICAS)", d.topic, d.minISR, d.rf)
	case d.minISR < 2:
		return fmt.Sprintf("topic %s has min.insync.replicas=%d: with the other replicas out of sync, acks=all is the leader alone, "+
			"and a confirmed reading can rest on one broker; set it to 2 (Confluent Cloud's default, with replication factor 3)", d.topic, d.minISR)
	}
	return ""
}

// topicDurability reads the replication factor of each topic in meta, its
// min.insync.replicas and its cleanup.policy.
func topicDurability(ctx context.Context, cl *kgo.Client, meta *kmsg.MetadataResponse) ([]durability, error) {
	req := kmsg.NewPtrDescribeConfigsRequest()
	var ds []durability
	for _, t := range meta.Topics {
		if t.Topic == nil {
			continue
		}
		d := durability{topic: *t.Topic, rf: -1}
		for _, p := range t.Partitions {
			if d.rf < 0 || len(p.Replicas) < d.rf {
				d.rf = len(p.Replicas)
			}
		}
		ds = append(ds, d)
		r := kmsg.NewDescribeConfigsRequestResource()
		r.ResourceType = kmsg.ConfigResourceTypeTopic
		r.ResourceName = *t.Topic
		r.ConfigNames = []string{"min.insync.replicas", "cleanup.policy"}
		req.Resources = append(req.Resources, r)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return ds, fmt.Errorf("describe topic configs: %w", err)
	}
	for _, r := range resp.Resources {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			return ds, fmt.Errorf("describe topic %s: %w", r.ResourceName, err)
		}
		for _, c := range r.Configs {
			if c.Value == nil {
				continue
			}
			for i := range ds {
				if ds[i].topic != r.ResourceName {
					continue
				}
				switch c.Name {
				case "min.insync.replicas":
					ds[i].minISR, _ = strconv.Atoi(*c.Value)
				case "cleanup.policy":
					ds[i].cleanup = *c.Value
				}
			}
		}
	}
	return ds, nil
}
