package sink

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// partitions is the set of the topic's partitions this replica owns,
// kept by the group's assign and revoke callbacks.
type partitions struct {
	mu sync.Mutex
	m  map[int32]bool
}

func (p *partitions) add(ps []int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[int32]bool{}
	}
	for _, n := range ps {
		p.m[n] = true
	}
}

func (p *partitions) remove(ps []int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range ps {
		delete(p.m, n)
	}
}

func (p *partitions) list() []int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int32, 0, len(p.m))
	for n := range p.m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// updateLag sets sink_lag_records for each owned partition: its high
// watermark minus the group's committed offset (or, before the first
// commit, minus the oldest offset, where a new group starts).
func (s *Sink) updateLag(ctx context.Context, cl *kgo.Client) error {
	topic := s.cfg.Kafka.Topic
	parts := s.own.list()
	if len(parts) == 0 {
		return nil
	}
	latest, err := listOffsets(ctx, cl, topic, parts, -1)
	if err != nil {
		return err
	}
	committed := cl.CommittedOffsets()[topic]
	var earliest map[int32]int64
	for _, p := range parts {
		if c, ok := committed[p]; !ok || c.Offset < 0 {
			if earliest, err = listOffsets(ctx, cl, topic, parts, -2); err != nil {
				return err
			}
			break
		}
	}
	for _, p := range parts {
		from := earliest[p]
		if c, ok := committed[p]; ok && c.Offset >= 0 {
			from = c.Offset
		}
		s.m.setLag(topic, p, max(latest[p]-from, 0))
	}
	return nil
}

// listOffsets asks for the latest (ts -1) or earliest (ts -2) offset of
// each partition; the client sends each partition to its leader.
func listOffsets(ctx context.Context, cl *kgo.Client, topic string, parts []int32, ts int64) (map[int32]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range parts {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = ts
		rp.CurrentLeaderEpoch = -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	out := make(map[int32]int64, len(parts))
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("list offsets %s[%d]: %w", topic, p.Partition, err)
			}
			out[p.Partition] = p.Offset
		}
	}
	return out, nil
}
