package sink

import (
	"context"
	"sync"
	"testing"
	"time"

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
