package sink

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// producer feeds seqs 1..n of each device to the topic in chunks, in the
// background, pausing between chunks so faults land mid-stream.
type producer struct {
	done chan struct{}
}

func produceInBackground(t *testing.T, k *kafka.Cluster, devs []string, n, chunk uint64, pause time.Duration) *producer {
	t.Helper()
	p := &producer{done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(p.done)
		for s := uint64(1); s <= n; s += chunk {
			keys, vals := encoded(devs, s, min(s+chunk-1, n))
			k.Produce(t, stack.Topic, keys, vals...)
			time.Sleep(pause)
		}
	}()
	t.Cleanup(wg.Wait)
	return p
}

func (p *producer) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("producer did not finish")
	}
}

// checkAll fails unless the table holds every reading of devs with seq
// 1..n exactly once.
func checkAll(t *testing.T, url string, devs []string, n int) {
	t.Helper()
	want := len(devs) * n
	testkit.WaitFor(t, "every reading in the table", 60*time.Second, func() bool { return countOnly(url) >= want })
	c := count(t, url, devs, n)
	if c.rows != want || c.distinct != want || c.missing != 0 {
		t.Fatalf("table: %d rows, %d distinct, %d missing; want %d rows, none missing, no duplicates", c.rows, c.distinct, c.missing, want)
	}
	t.Logf("%d readings, %d rows, 0 missing, 0 duplicate rows", want, c.rows)
}

// TestFaultPostgresRestartMidStream crashes PostgreSQL (immediate
// shutdown: the open transaction is lost) while the sink writes, keeps it
// down 2 s, and starts it again: the sink reports not ready, retries, and
// in the end every reading is one row.
func TestFaultPostgresRestartMidStream(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	c := pgcluster.ForTest(t)
	url, err := c.CreateDatabase(context.Background(), "restart")
	if err != nil {
		t.Fatal(err)
	}
	devs := stack.Devices(4)
	const n = 1000
	r := startSink(t, sinkEnv(k, certs, url))
	p := produceInBackground(t, k, devs, n, 25, 20*time.Millisecond)
	testkit.WaitFor(t, "some rows", 30*time.Second, func() bool { return countOnly(url) > 400 })
	if err := c.Crash(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "not ready while the database is down", 15*time.Second, func() bool { return !r.ready() })
	time.Sleep(2 * time.Second)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	checkAll(t, url, devs, n)
	testkit.WaitFor(t, "ready again", 15*time.Second, r.ready)
	if r.metric("sink_db_errors_total") < 1 {
		t.Errorf("sink_db_errors_total = %v, want the outage counted", r.metric("sink_db_errors_total"))
	}
	// With nothing to write, an outage still shows on /readyz.
	if err := c.Crash(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "not ready while the database is down and the sink idle", 15*time.Second, func() bool { return !r.ready() })
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "ready once the database is back", 15*time.Second, r.ready)
}

// TestFaultKafkaUnreachable cuts every Kafka connection for a while in the
// middle of the stream: the sink reports not ready, and once Kafka is back
// it carries on from its committed offsets.
func TestFaultKafkaUnreachable(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	_, url := migrated(t)
	devs := stack.Devices(4)
	const n = 600
	r := startSink(t, sinkEnv(k, certs, url))
	keys, vals := encoded(devs, 1, n/2)
	k.Produce(t, stack.Topic, keys, vals...)
	testkit.WaitFor(t, "some rows", 30*time.Second, func() bool { return countOnly(url) > 0 })
	k.Cut()
	testkit.WaitFor(t, "not ready while Kafka is cut off", 15*time.Second, func() bool { return !r.ready() })
	time.Sleep(3 * time.Second)
	k.Restore()
	keys, vals = encoded(devs, n/2+1, n)
	k.Produce(t, stack.Topic, keys, vals...)
	checkAll(t, url, devs, n)
	testkit.WaitFor(t, "ready again", 15*time.Second, r.ready)
}

// TestFaultTwoReplicasInOneGroup runs two sinks in one consumer group: they
// split the partitions, and when one stops mid-stream the other takes its
// partitions from the committed offsets. Every reading is one row.
func TestFaultTwoReplicasInOneGroup(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	_, url := migrated(t)
	devs := stack.Devices(12)
	const n = 300
	a := startSink(t, sinkEnv(k, certs, url))
	b := startSink(t, sinkEnv(k, certs, url))
	p := produceInBackground(t, k, devs, n, 10, 20*time.Millisecond)
	testkit.WaitFor(t, "both replicas writing", 30*time.Second, func() bool {
		return a.metric("sink_rows_written_total") > 0 && b.metric("sink_rows_written_total") > 0
	})
	if err := b.stop(); err != nil {
		t.Fatalf("replica b: %v", err)
	}
	p.wait(t)
	checkAll(t, url, devs, n)
	t.Logf("replica a wrote %v rows, b %v before it stopped", a.metric("sink_rows_written_total"), b.metric("sink_rows_written_total"))
}

// committedOffsets reads the group's committed offset of each partition of
// the readings topic (-1 where nothing is committed).
func committedOffsets(t *testing.T, k *kafka.Cluster, certs *pki.PKI, group string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.DialTLSConfig(certs.Client()),
		kgo.SASL(plain.Auth{User: stack.KafkaUser, Pass: stack.KafkaSecret}.AsMechanism()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = stack.Topic
	for p := range int32(stack.Partitions) {
		rt.Partitions = append(rt.Partitions, p)
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	for _, tp := range resp.Topics {
		for _, p := range tp.Partitions {
			out[p.Partition] = p.Offset
		}
	}
	return out
}

// produced is where each reading landed: per partition, the (device, seq)
// at each offset, as Produce writes them (in order, into an empty topic).
type produced map[int32][]devSeq

type devSeq struct {
	dev string
	seq int64
}

func produceAll(t *testing.T, k *kafka.Cluster, devs []string, n uint64) produced {
	t.Helper()
	keys, vals := encoded(devs, 1, n)
	k.Produce(t, stack.Topic, keys, vals...)
	at := produced{}
	for i, key := range keys {
		p := int32(kafka.Partition(key, stack.Partitions))
		at[p] = append(at[p], devSeq{key, int64(i/len(devs)) + 1})
	}
	return at
}

// checkCommittedAreStored fails if a partition's committed offset is past a
// reading that is not in the table: offsets must follow rows, never lead.
func checkCommittedAreStored(t *testing.T, conn *pgx.Conn, at produced, committed map[int32]int64) {
	t.Helper()
	for p, recs := range at {
		c := committed[p]
		if c <= 0 {
			continue
		}
		var devs []string
		var seqs []int64
		for _, r := range recs[:min(int(c), len(recs))] {
			devs = append(devs, r.dev)
			seqs = append(seqs, r.seq)
		}
		var missing int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM unnest($1::text[], $2::bigint[]) AS w(d, s)
			WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE r.device_id = w.d AND r.seq = w.s)`, devs, seqs).Scan(&missing)
		if err != nil {
			t.Fatal(err)
		}
		if missing > 0 {
			t.Fatalf("partition %d: offset %d committed, but %d readings before it are not in the table", p, c, missing)
		}
	}
}

// TestLanesCommitEachPartitionAfterItsRows runs the sink with two lanes
// (database sessions) over six partitions, and blocks the very first
// reading's insert behind another session's open transaction. The other
// lane's partitions are written and committed to the end meanwhile (one
// writer would have been stuck behind the first batch, and lanes fed by a
// loop that waits on the blocked one stall too); the blocked lane commits no
// offset past rows that are not in the table, at any moment sampled. Once
// the blocker goes, everything is written once, every offset is
// committed, and each device's rows were committed in seq order.
func TestLanesCommitEachPartitionAfterItsRows(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	watch, url := migrated(t)
	ctx := context.Background()
	devs := stack.Devices(12)
	const n = 200
	victim := devs[0] // its seq 1 is the first record produced: offset 0 of its partition
	vp := int32(kafka.Partition(victim, stack.Partitions))

	blocker, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(ctx)
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, `INSERT INTO readings (device_id, seq, sensor, kind, ts, time_synced, "values")
		VALUES ($1, 1, 'x', 'x', now(), true, '{}')`, victim); err != nil {
		t.Fatal(err)
	}
	at := produceAll(t, k, devs, n)
	if at[vp][0] != (devSeq{victim, 1}) {
		t.Fatalf("partition %d starts with %v, not the victim's first reading", vp, at[vp][0])
	}

	env := sinkEnv(k, certs, url)
	env["SINK_WRITERS"] = "2"
	env["SINK_BATCH_SIZE"] = "40"
	r := startSink(t, env)
	testkit.WaitFor(t, "a lane waiting on the blocker", 30*time.Second, func() bool { return sinkWaitsOnALock(t, watch) })
	free := func(p int32) bool { return laneOf(p, 2) != laneOf(vp, 2) }
	testkit.WaitFor(t, "the other lane's partitions committed to the end while one lane is blocked", 60*time.Second, func() bool {
		c := committedOffsets(t, k, certs, config.DefaultSinkGroup)
		checkCommittedAreStored(t, watch, at, c)
		for p, recs := range at {
			if free(p) && c[p] != int64(len(recs)) {
				return false
			}
		}
		return true
	})
	c := committedOffsets(t, k, certs, config.DefaultSinkGroup)
	checkCommittedAreStored(t, watch, at, c)
	if c[vp] > 0 {
		t.Fatalf("partition %d committed to %d, past its blocked first reading", vp, c[vp])
	}
	if !sinkWaitsOnALock(t, watch) {
		t.Fatal("the blocked lane went on without its row")
	}
	t.Logf("while blocked: committed offsets %v (partition %d blocked)", c, vp)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(t, url, devs, n)
	testkit.WaitFor(t, "every offset committed", 30*time.Second, func() bool {
		c := committedOffsets(t, k, certs, config.DefaultSinkGroup)
		for p, recs := range at {
			if c[p] != int64(len(recs)) {
				return false
			}
		}
		return true
	})
	var backwards int
	if err := watch.QueryRow(ctx, `SELECT count(*) FROM (SELECT received_at < lag(received_at) OVER (PARTITION BY device_id ORDER BY seq) AS back
		FROM readings) x WHERE back`).Scan(&backwards); err != nil {
		t.Fatal(err)
	}
	if backwards != 0 {
		t.Errorf("%d rows committed before a lower seq of their device", backwards)
	}
	if got := r.metric("sink_duplicates_total"); got != 0 {
		t.Errorf("sink_duplicates_total = %v, want 0", got)
	}
}
