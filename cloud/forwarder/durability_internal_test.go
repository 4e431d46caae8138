package forwarder

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// TestDurabilityWarning: a warning whenever a confirmation could rest on
// one replica (replication factor 1, min.insync.replicas 1) or every write
// would be refused; none for Confluent Cloud's RF 3 / min.insync.replicas 2.
func TestDurabilityWarning(t *testing.T) {
	for _, tt := range []struct {
		rf, minISR int
		want       string
	}{
		{3, 2, ""},
		{3, 3, ""},
		{1, 1, "replication factor 1"},
		{3, 1, "min.insync.replicas=1"},
		{3, 0, "min.insync.replicas=0"}, // not known: warned, not assumed safe
		{2, 3, "refuses every write"},
	} {
		got := durability{topic: "t", rf: tt.rf, minISR: tt.minISR}.warning()
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("rf %d, min.insync.replicas %d: warning %q, want one containing %q", tt.rf, tt.minISR, got, tt.want)
		}
	}
}

// TestTopicDurability reads the replication factor, min.insync.replicas
// and cleanup.policy from a cluster (kfake, TLS + SASL): one broker gives
// replication factor 1, and a topic's own settings are the ones read.
func TestTopicDurability(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	if err := k.Cluster.CreateTopic("strict", 2, map[string]string{"min.insync.replicas": "2"}); err != nil {
		t.Fatal(err)
	}
	opts, err := producerOpts(orderCfg(t, k, certs), "durability-test")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	meta, err := probeTopics(ctx, cl, stack.Topic, "strict", stack.StatusTopic)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := topicDurability(ctx, cl, meta)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]durability{}
	for _, d := range ds {
		got[d.topic] = d
	}
	if d := got[stack.Topic]; d.rf != 1 || d.minISR != 1 || !strings.Contains(d.warning(), "replication factor 1") {
		t.Errorf("%s: %+v, warning %q; want replication factor 1, min.insync.replicas 1, warned", stack.Topic, d, d.warning())
	}
	if d := got["strict"]; d.rf != 1 || d.minISR != 2 || !strings.Contains(d.warning(), "replication factor 1") {
		t.Errorf("strict: %+v, warning %q; want replication factor 1, min.insync.replicas 2, warned", d, d.warning())
	}
	// The status topic's compaction is read as the cluster has it.
	if d := got[stack.StatusTopic]; !compacted(d.cleanup) {
		t.Errorf("%s: cleanup.policy %q, want compact", stack.StatusTopic, d.cleanup)
	}
	if d := got[stack.Topic]; d.cleanup != "delete" || compacted(d.cleanup) {
		t.Errorf("%s: cleanup.policy %q, want delete", stack.Topic, d.cleanup)
	}
}
