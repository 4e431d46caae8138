package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// sinkReadings is the backlog BenchmarkSink loads.
const sinkReadings = 100_000

// BenchmarkSink: 100,000 readings (100 devices) wait in kfake (TLS, SASL
// PLAIN, 6 partitions, as production); each iteration starts the real
// `cloud-forwarder sink` on a fresh database of a local PostgreSQL (fsync
// on, default settings) and a fresh consumer group, and the timer runs
// until every record is committed. rows/s is from the process start
// (connect, migrate, join the group included); peak-RSS-MiB is the
// process's VmHWM.
func BenchmarkSink(b *testing.B) {
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		if os.Getenv("CI") != "true" {
			b.Skipf("skipping: %v", err)
		}
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Remove() })
	certs := pki.New(b)
	k := stack.StartKafka(b, certs)
	keys := make([]string, sinkReadings)
	vals := make([][]byte, sinkReadings)
	for i := range vals {
		dev := "pi-" + fmt.Sprint(i%devices)
		keys[i], vals[i] = dev, reading.Encode(nil, stack.Reading(dev, uint64(i/devices+1)))
	}
	k.Produce(b, stack.Topic, keys, vals...)

	var rssMiB, steady float64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		db := fmt.Sprintf("bench%d", i)
		url, err := c.CreateDatabase(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		s := startSink(b, k, certs, url, db)
		s.waitMetric(b, "sink_records_total", 1, 60*time.Second, 10*time.Millisecond)
		first := time.Now()
		s.waitMetric(b, "sink_records_total", sinkReadings, 120*time.Second, 10*time.Millisecond)
		steady = float64(sinkReadings-1) / time.Since(first).Seconds()
		b.StopTimer()
		rssMiB = max(rssMiB, float64(peakRSS(s.cmd.Process.Pid))/1024)
		s.stop(b)
		if n := rows(b, url); n != sinkReadings {
			b.Fatalf("%d rows, want %d", n, sinkReadings)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(sinkReadings*b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(steady, "rows/s-after-first")
	b.ReportMetric(rssMiB, "peak-RSS-MiB")
}

func startSink(tb testing.TB, k *kafka.Cluster, certs *pki.PKI, url, group string) *child {
	tb.Helper()
	c := &child{addr: testkit.FreeAddr(tb), done: make(chan struct{})}
	c.cmd = exec.Command(binPath, "sink")
	c.cmd.Env = append([]string{
		"CONFLUENT_BOOTSTRAP_SERVER_SASL=" + k.Addr,
		"CONFLUENT_API_KEY=" + stack.KafkaUser,
		"CONFLUENT_API_SECRET=" + stack.KafkaSecret,
		"KAFKA_CA_FILE=" + certs.CAFile,
		"DATABASE_URL=" + url,
		"SINK_GROUP=" + group,
		"SINK_LISTEN=" + c.addr,
		"FORWARDER_LOG_LEVEL=warn",
	}, strings.Fields(os.Getenv("BENCH_SINK_ENV"))...) // e.g. "GOGC=50 SINK_BATCH_SIZE=2000"
	c.cmd.Stderr = os.Stderr
	if err := c.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	tb.Cleanup(func() { _ = c.cmd.Process.Kill(); <-c.done })
	return c
}

func rows(tb testing.TB, url string) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(DISTINCT (device_id, seq)) FROM readings").Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}
