// Package topicread consumes the readings topic with franz-go's kgo
// consumer, reading partitions directly by offset (no group, no commits),
// so the harness's count of what reached Kafka does not go through the
// forwarder's own code.
//
// Follow tails the topic for the whole run (to time deliveries); ReadAll
// reads it from the start to the end offsets once the run is over.
//
//	recs, err := topicread.ReadAll(ctx, topicread.Config{Bootstrap: addr, TLS: tlsCfg,
//		User: "u", Password: "p", Topic: "sensor-readings", Partitions: 3})
package topicread

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Config says where and how to connect.
type Config struct {
	Bootstrap      string
	TLS            *tls.Config
	User, Password string
	Topic          string
	Partitions     int32
	// Redirect maps an advertised host:port to the one actually dialed, so
	// the harness's reader bypasses the proxy it cuts for outages.
	Redirect map[string]string
}

// Record is one Kafka record and what the harness makes of it.
type Record struct {
	Partition int32
	Offset    int64
	Recv      time.Time       // when the consumer got it
	Reading   reading.Reading // zero if Err is set
	Err       error           // the value did not decode as a reading
	Headers   map[string]string
	Key       string
	Timestamp time.Time // the record's timestamp (the forwarder sets the reading's ts)
}

func (c Config) client(extra ...kgo.Opt) (*kgo.Client, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	dial := func(ctx context.Context, network, host string) (net.Conn, error) {
		if to, ok := c.Redirect[host]; ok {
			host = to
		}
		tcfg := c.TLS.Clone()
		if tcfg.ServerName == "" {
			tcfg.ServerName, _, _ = net.SplitHostPort(host)
		}
		return (&tls.Dialer{NetDialer: d, Config: tcfg}).DialContext(ctx, network, host)
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(c.Bootstrap),
		kgo.Dialer(dial),
		kgo.SASL(plain.Auth{User: c.User, Pass: c.Password}.AsMechanism()),
		kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 100 * time.Millisecond }),
	}, extra...)
	return kgo.NewClient(opts...)
}

func (c Config) partitions() map[string]map[int32]kgo.Offset {
	ps := map[int32]kgo.Offset{}
	for p := range c.Partitions {
		ps[p] = kgo.NewOffset().AtStart()
	}
	return map[string]map[int32]kgo.Offset{c.Topic: ps}
}

func decode(r *kgo.Record, now time.Time) Record {
	out := Record{Partition: r.Partition, Offset: r.Offset, Recv: now, Headers: map[string]string{},
		Key: string(r.Key), Timestamp: r.Timestamp}
	for _, h := range r.Headers {
		out.Headers[h.Key] = string(h.Value)
	}
	out.Reading, out.Err = reading.Decode(r.Value)
	return out
}

// Follow consumes the topic from the start and calls fn for every record
// until ctx is done. Fetch errors (an outage) are retried by the client.
func Follow(ctx context.Context, c Config, fn func(Record)) error {
	cl, err := c.client(kgo.ConsumePartitions(c.partitions()))
	if err != nil {
		return err
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) { fn(decode(r, now)) })
	}
	return nil
}

// EndOffsets returns the high watermark of each partition of topic.
func EndOffsets(ctx context.Context, c Config, topic string) (map[int32]int64, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return endOffsets(ctx, cl, topic, c.Partitions)
}

func endOffsets(ctx context.Context, cl *kgo.Client, topic string, n int32) (map[int32]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for p := range n {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = -1 // latest
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return nil, fmt.Errorf("list offsets of %s[%d]: error code %d", topic, p.Partition, p.ErrorCode)
			}
			out[p.Partition] = p.Offset
		}
	}
	if len(out) != int(n) {
		return nil, fmt.Errorf("list offsets of %s: got %d partitions, want %d", topic, len(out), n)
	}
	return out, nil
}

// ReadAll reads every record of the topic, from the start of each partition
// to its end offset at the time of the call.
func ReadAll(ctx context.Context, c Config) ([]Record, error) {
	cl, err := c.client(kgo.ConsumePartitions(c.partitions()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	end, err := endOffsets(ctx, cl, c.Topic, c.Partitions)
	if err != nil {
		return nil, err
	}
	next := map[int32]int64{}
	done := func() bool {
		for p, e := range end {
			if next[p] < e {
				return false
			}
		}
		return true
	}
	var out []Record
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out, fmt.Errorf("read %s: %w", c.Topic, ctx.Err())
		}
		var errs []error
		fs.EachError(func(t string, p int32, err error) { errs = append(errs, fmt.Errorf("%s[%d]: %w", t, p, err)) })
		if len(errs) > 0 {
			return out, errors.Join(errs...)
		}
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < end[r.Partition] {
				out = append(out, decode(r, now))
			}
			next[r.Partition] = r.Offset + 1
		})
	}
	return out, nil
}
