package bench

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/sink/schema"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// sinkReadings is the backlog BenchmarkSink loads.
const sinkReadings = 100_000

// BenchmarkSink: 100,000 readings (100 devices) wait in kfake (TLS, SASL
// PLAIN, 6 partitions, as production). Each round (BENCH_SINK_ROUNDS, 3)
// runs these in turn, each on a fresh database of one local PostgreSQL
// (fsync on, default settings), so an A/B comparison shares the machine's
// load:
//
//   - sink: the real `cloud-forwarder sink` of this tree with a fresh
//     consumer group, until every record is committed. rows/s is from the
//     process start (connect, migrate, join the group included);
//     rows/s-after-first from the first committed batch; peak-RSS-MiB is
//     the process's VmHWM.
//   - base: the same with the binary BENCH_SINK_BASE_BIN, when set (base-*
//     metrics; x-base is sink over base, medians).
//   - psql-copy: the same readings as a CSV file, copied into the same
//     (migrated, empty) readings table by psql's \copy, one COPY, psql's
//     start included: the database's own limit for one session, without
//     Kafka, duplicate handling or offsets.
//
// BENCH_SINK_DB_RTT (e.g. 10ms) puts PostgreSQL that far away, behind a
// delaying proxy, as a managed database in another zone would be; every
// run of the round connects through it.
//
// Reported figures are medians over the rounds; the log line gives every
// round's, and loadavg the 1-minute load average at the end.
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
	csvPath := filepath.Join(b.TempDir(), "readings.csv")
	if err := writeCSV(csvPath, vals); err != nil {
		b.Fatal(err)
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("BENCH_SINK_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	direct := fmt.Sprintf("127.0.0.1:%d", c.Port)
	dbAddr := direct
	if rtt, err := time.ParseDuration(os.Getenv("BENCH_SINK_DB_RTT")); err == nil && rtt > 0 {
		p := tcpproxy.New(b, direct)
		p.SetDelay(rtt/2, rtt/20)
		dbAddr = p.Addr()
		b.Logf("PostgreSQL %v away (round trip) behind %s", rtt, dbAddr)
	}
	dbs := 0
	freshDB := func() (url, name string) {
		dbs++
		name = fmt.Sprintf("bench%d", dbs)
		url, err := c.CreateDatabase(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		if !strings.Contains(url, direct) {
			b.Fatalf("database URL without %s", direct)
		}
		return strings.Replace(url, direct, dbAddr, 1), name
	}
	base := os.Getenv("BENCH_SINK_BASE_BIN")
	var sink, baseRun sinkRuns
	var copyRates []float64
	b.ResetTimer()
	for range b.N {
		for range rounds {
			sink.add(runSink(b, binPath, k, certs, freshDB))
			if base != "" {
				baseRun.add(runSink(b, base, k, certs, freshDB))
			}
			copyRates = append(copyRates, runCopy(b, csvPath, freshDB))
		}
	}
	b.StopTimer()
	b.Logf("rows/s per round: sink %.0f; base %.0f; psql-copy %.0f", sink.rates, baseRun.rates, copyRates)
	b.ReportMetric(median(sink.rates), "rows/s")
	b.ReportMetric(median(sink.steady), "rows/s-after-first")
	b.ReportMetric(sink.rssMiB, "peak-RSS-MiB")
	if base != "" {
		b.ReportMetric(median(baseRun.rates), "base-rows/s")
		b.ReportMetric(median(baseRun.steady), "base-rows/s-after-first")
		b.ReportMetric(baseRun.rssMiB, "base-peak-RSS-MiB")
		b.ReportMetric(median(sink.rates)/median(baseRun.rates), "x-base")
	}
	b.ReportMetric(median(copyRates), "psql-copy-rows/s")
	b.ReportMetric(loadAvg(), "loadavg")
}

// sinkRuns collects the figures of one binary's runs.
type sinkRuns struct {
	rates, steady []float64
	rssMiB        float64
}

func (r *sinkRuns) add(rate, steady, rssMiB float64) {
	r.rates = append(r.rates, rate)
	r.steady = append(r.steady, steady)
	r.rssMiB = max(r.rssMiB, rssMiB)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runSink runs binary bin on the backlog into a fresh database and returns
// its rows/s from the start, from the first committed batch, and its peak RSS.
func runSink(b *testing.B, bin string, k *kafka.Cluster, certs *pki.PKI, freshDB func() (string, string)) (rate, steady, rssMiB float64) {
	url, db := freshDB()
	start := time.Now()
	s := startSink(b, bin, k, certs, url, db)
	s.waitMetric(b, "sink_records_total", 1, 60*time.Second, 10*time.Millisecond)
	first := time.Now()
	s.waitMetric(b, "sink_records_total", sinkReadings, 120*time.Second, 10*time.Millisecond)
	end := time.Now()
	rssMiB = float64(peakRSS(s.cmd.Process.Pid)) / 1024
	s.stop(b)
	if n := rows(b, url); n != sinkReadings {
		b.Fatalf("%s: %d rows, want %d", bin, n, sinkReadings)
	}
	return sinkReadings / end.Sub(start).Seconds(), (sinkReadings - 1) / end.Sub(first).Seconds(), rssMiB
}

// runCopy times psql copying the CSV file into an empty migrated readings
// table of a fresh database, and returns its rows/s.
func runCopy(b *testing.B, csvPath string, freshDB func() (string, string)) float64 {
	psql, err := exec.LookPath("psql")
	if err != nil {
		dir, ferr := pgcluster.Find()
		if ferr != nil {
			b.Fatal(ferr)
		}
		psql = filepath.Join(dir, "psql")
	}
	url, _ := freshDB()
	migrate(b, url)
	copyCmd := `\copy readings (device_id, seq, sensor, kind, ts, time_synced, temperature_c, humidity_pct, pressure_hpa, "values") FROM '` +
		csvPath + `' WITH (FORMAT csv)`
	start := time.Now()
	if out, err := exec.Command(psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", copyCmd).CombinedOutput(); err != nil {
		b.Fatalf("psql: %v\n%s", err, out)
	}
	rate := sinkReadings / time.Since(start).Seconds()
	if n := rows(b, url); n != sinkReadings {
		b.Fatalf("psql-copy: %d rows, want %d", n, sinkReadings)
	}
	return rate
}

// writeCSV writes the readings in the columns of the sink's COPY (values
// as JSON, absent quantities empty, which CSV reads as NULL).
func writeCSV(path string, vals [][]byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	opt := func(m map[string]float64, k string) string {
		if v, ok := m[k]; ok {
			return strconv.FormatFloat(v, 'g', -1, 64)
		}
		return ""
	}
	for _, v := range vals {
		r, err := reading.Decode(v)
		if err != nil {
			f.Close()
			return err
		}
		js, err := json.Marshal(r.Values)
		if err != nil {
			f.Close()
			return err
		}
		err = w.Write([]string{r.DeviceID, strconv.FormatUint(r.Seq, 10), r.Sensor, r.Kind, r.TS.Format(time.RFC3339Nano),
			strconv.FormatBool(r.TimeSynced), opt(r.Values, reading.Temperature), opt(r.Values, reading.Humidity),
			opt(r.Values, reading.Pressure), string(js)})
		if err != nil {
			f.Close()
			return err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func migrate(tb testing.TB, url string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, _, err := schema.Migrate(ctx, conn, nil); err != nil {
		tb.Fatal(err)
	}
}

// loadAvg is the machine's 1-minute load average (0 if unknown), reported
// beside the figures: the machine may be shared.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

func startSink(tb testing.TB, bin string, k *kafka.Cluster, certs *pki.PKI, url, group string) *child {
	tb.Helper()
	c := &child{addr: testkit.FreeAddr(tb), done: make(chan struct{})}
	c.cmd = exec.Command(bin, "sink")
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
