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
//   - telegraf: with BENCH_TELEGRAF_BIN, Telegraf (the baseline
//     was 1.39.3) reading the same topic with inputs.kafka_consumer (its
//     own consumer group, TLS, SASL PLAIN, oldest offset) and the json_v2
//     parser into outputs.postgresql, writing a readings table created
//     beforehand with the sink's primary key and indexes (telegraf-*
//     metrics; x-telegraf is sink over telegraf, medians). rows/s is from
//     the process start until the table holds every reading (polled every
//     50 ms). Build it with only those plugins:
//     go build -tags "custom,inputs.kafka_consumer,outputs.postgresql,parsers.json_v2" ./cmd/telegraf
//     in the module's source (go mod download github.com/influxdata/telegraf@v1.39.3).
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
	telegraf := os.Getenv("BENCH_TELEGRAF_BIN")
	var sink, baseRun, tgRun sinkRuns
	var copyRates []float64
	b.ResetTimer()
	for range b.N {
		for range rounds {
			sink.add(runSink(b, binPath, k, certs, freshDB))
			if base != "" {
				baseRun.add(runSink(b, base, k, certs, freshDB))
			}
			if telegraf != "" {
				tgRun.add(runTelegraf(b, telegraf, k, certs, freshDB))
			}
			copyRates = append(copyRates, runCopy(b, csvPath, freshDB))
		}
	}
	b.StopTimer()
	b.Logf("rows/s per round: sink %.0f; base %.0f; telegraf %.0f; psql-copy %.0f", sink.rates, baseRun.rates, tgRun.rates, copyRates)
	b.ReportMetric(median(sink.rates), "rows/s")
	b.ReportMetric(median(sink.steady), "rows/s-after-first")
	b.ReportMetric(sink.rssMiB, "peak-RSS-MiB")
	if base != "" {
		b.ReportMetric(median(baseRun.rates), "base-rows/s")
		b.ReportMetric(median(baseRun.steady), "base-rows/s-after-first")
		b.ReportMetric(baseRun.rssMiB, "base-peak-RSS-MiB")
		b.ReportMetric(median(sink.rates)/median(baseRun.rates), "x-base")
	}
	if telegraf != "" {
		b.ReportMetric(median(tgRun.rates), "telegraf-rows/s")
		b.ReportMetric(tgRun.rssMiB, "telegraf-peak-RSS-MiB")
		b.ReportMetric(median(sink.rates)/median(tgRun.rates), "x-telegraf")
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

// telegrafTable is the table Telegraf writes: the sink's primary key and
// indexes, Telegraf's column names (time for ts) and no jsonb values
// column (its postgresql output has none to fill).
const telegrafTable = `CREATE TABLE readings (
    time          timestamptz      NOT NULL,
    device_id     text             NOT NULL,
    sensor        text             NOT NULL,
    kind          text             NOT NULL,
    seq           bigint           NOT NULL,
    time_synced   boolean,
    temperature_c double precision,
    humidity_pct  double precision,
    pressure_hpa  double precision,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX readings_device_sensor_ts ON readings (device_id, sensor, time);
CREATE INDEX readings_ts_brin ON readings USING brin (time);`

// telegrafConf is Telegraf's configuration: the agent flushes as soon as a
// batch of 5,000 is there, the consumer may hold 20,000 undelivered.
const telegrafConf = `[agent]
  interval = "10s"
  flush_interval = "100ms"
  flush_jitter = "0s"
  metric_batch_size = 5000
  metric_buffer_limit = 200000
  omit_hostname = true
  quiet = true

[[inputs.kafka_consumer]]
  brokers = [%q]
  topics = [%q]
  consumer_group = %q
  offset = "oldest"
  max_undelivered_messages = 20000
  kafka_version = "2.8.0"
  enable_tls = true
  tls_ca = %q
  sasl_mechanism = "PLAIN"
  sasl_username = %q
  sasl_password = %q
  data_format = "json_v2"
  [[inputs.kafka_consumer.json_v2]]
    measurement_name = "readings"
    timestamp_path = "ts"
    timestamp_format = "2006-01-02T15:04:05.999999999Z07:00"
    [[inputs.kafka_consumer.json_v2.tag]]
      path = "device_id"
    [[inputs.kafka_consumer.json_v2.tag]]
      path = "sensor"
    [[inputs.kafka_consumer.json_v2.tag]]
      path = "kind"
    [[inputs.kafka_consumer.json_v2.field]]
      path = "seq"
      type = "int"
    [[inputs.kafka_consumer.json_v2.field]]
      path = "time_synced"
      type = "bool"
    [[inputs.kafka_consumer.json_v2.field]]
      path = "values.temperature_c"
      rename = "temperature_c"
      optional = true
    [[inputs.kafka_consumer.json_v2.field]]
      path = "values.humidity_pct"
      rename = "humidity_pct"
      optional = true
    [[inputs.kafka_consumer.json_v2.field]]
      path = "values.pressure_hpa"
      rename = "pressure_hpa"
      optional = true

[[outputs.postgresql]]
  connection = %q
  timestamp_column_type = "timestamp with time zone"
`

// runTelegraf runs Telegraf bin on the backlog into a fresh database and
// returns its rows/s from the start and its peak RSS.
func runTelegraf(b *testing.B, bin string, k *kafka.Cluster, certs *pki.PKI, freshDB func() (string, string)) (rate, steady, rssMiB float64) {
	ctx := context.Background()
	url, db := freshDB()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, telegrafTable); err != nil {
		b.Fatal(err)
	}
	conf := filepath.Join(b.TempDir(), "telegraf.conf")
	text := fmt.Sprintf(telegrafConf, k.Addr, stack.Topic, "telegraf-"+db, certs.CAFile, stack.KafkaUser, stack.KafkaSecret, url)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	var logs testkit.LogBuffer
	cmd := exec.Command(bin, "--config", conf)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() { _ = cmd.Process.Kill(); <-done }
	defer stop()
	var first time.Time
	for n := 0; n < sinkReadings; {
		select {
		case <-done:
			b.Fatalf("telegraf exited after %d rows:\n%s", n, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Since(start) > 120*time.Second {
			b.Fatalf("telegraf: %d rows after 120 s:\n%s", n, logs.String())
		}
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM readings").Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
	}
	end := time.Now()
	rssMiB = float64(peakRSS(cmd.Process.Pid)) / 1024
	stop()
	if n := rows(b, url); n != sinkReadings {
		b.Fatalf("telegraf: %d rows, want %d", n, sinkReadings)
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
