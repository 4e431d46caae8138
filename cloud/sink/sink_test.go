package sink

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/cloud/sink/schema"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// sinkEnv is the sink's environment for a kfake cluster with TLS and SASL
// PLAIN, as production has, and a database URL.
func sinkEnv(k *kafka.Cluster, certs *pki.PKI, dbURL string) map[string]string {
	return map[string]string{
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr,
		"CONFLUENT_API_KEY":               stack.KafkaUser,
		"CONFLUENT_API_SECRET":            stack.KafkaSecret,
		"KAFKA_CA_FILE":                   certs.CAFile,
		"DATABASE_URL":                    dbURL,
		"SINK_LISTEN":                     "127.0.0.1:0",
	}
}

// running is a Sink started by startSink.
type running struct {
	s    *Sink
	addr string
	log  *testkit.LogBuffer
	stop func() error // cancels Run and returns its error
}

// startSink runs a Sink in this process until the test ends (or stop).
func startSink(t *testing.T, env map[string]string) *running {
	t.Helper()
	return startSinkWith(t, env, nil)
}

// startSinkWith is startSink with tune, if not nil, applied to the Sink
// before it runs.
func startSinkWith(t *testing.T, env map[string]string, tune func(*Sink)) *running {
	t.Helper()
	cfg, err := config.LoadSink("", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	r := &running{log: &testkit.LogBuffer{}}
	addr := make(chan string, 1)
	r.s, err = New(cfg, Options{Logger: r.log.Logger(),
		Listening: func(a string) { addr <- a }})
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(r.s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.s.Run(ctx) }()
	var once sync.Once
	var runErr error
	r.stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("sink log:\n%s", r.log)
		}
	})
	select {
	case r.addr = <-addr:
	case err := <-done:
		t.Fatalf("Run returned at once: %v", err)
	}
	return r
}

func (r *running) ready() bool {
	resp, err := http.Get("http://" + r.addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (r *running) metric(name string) float64 { return testkit.Metric(r.addr, name) }

// encoded returns the wire form of seqs from..to of each device, and the keys (device ids).
func encoded(devs []string, from, to uint64) (keys []string, values [][]byte) {
	for s := from; s <= to; s++ {
		for _, d := range devs {
			keys = append(keys, d)
			values = append(values, reading.Encode(nil, stack.Reading(d, s)))
		}
	}
	return keys, values
}

// tally counts the table by (device_id, seq): rows, distinct readings, and
// readings of devs with seq in 1..n that are missing.
type tally struct{ rows, distinct, missing int }

func count(t *testing.T, url string, devs []string, n int) tally {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var c tally
	if err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings").Scan(&c.rows, &c.distinct); err != nil {
		t.Fatal(err)
	}
	err = conn.QueryRow(ctx, `SELECT count(*) FROM unnest($1::text[]) d, generate_series(1, $2::bigint) s
		WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE r.device_id = d AND r.seq = s)`, devs, n).Scan(&c.missing)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// countOnly is count when the caller only wants the number of rows (0 if
// the database cannot be asked).
func countOnly(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM readings").Scan(&n); err != nil {
		return 0
	}
	return n
}

// TestSinkWritesEveryReadingOnce sends readings (some twice), records that
// are not readings or do not fit the table, and a dead-lettered record:
// every reading becomes one row, the bad records are counted and logged
// with their position, and nothing from the DLQ is written.
func TestSinkWritesEveryReadingOnce(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	_, url := migrated(t)
	devs := stack.Devices(4)
	const n = 500
	keys, vals := encoded(devs, 1, n)
	k.Produce(t, stack.Topic, keys, vals...)
	dupKeys, dupVals := encoded(devs, 100, 150)
	k.Produce(t, stack.Topic, dupKeys, dupVals...)
	nul := stack.Reading("pi-bad", 1)
	// reading.Decode refuses control characters in names, so this is a
	// decode skip too; refusals by PostgreSQL itself are covered by
	// TestWriteSkipsOnlyTheRefusedRows.
	nul.Kind = "sim\x00"
	k.Produce(t, stack.Topic, []string{"pi-bad", "pi-bad"}, []byte("{not json"), reading.Encode(nil, nul))
	k.Produce(t, stack.DLQTopic, nil, reading.Encode(nil, stack.Reading("pi-dlq", 1)))

	r := startSink(t, sinkEnv(k, certs, url))
	testkit.WaitFor(t, "every record consumed", 30*time.Second, func() bool {
		return r.metric("sink_records_total") == float64(len(vals)+len(dupVals)+2)
	})
	if c := count(t, url, devs, n); c.rows != len(devs)*n || c.distinct != c.rows || c.missing != 0 {
		t.Fatalf("table: %+v; want %d rows, all distinct, none missing", c, len(devs)*n)
	}
	if got := r.metric("sink_rows_written_total"); got != float64(len(devs)*n) {
		t.Errorf("sink_rows_written_total = %v", got)
	}
	if got := r.metric("sink_duplicates_total"); got != float64(len(dupVals)) {
		t.Errorf("sink_duplicates_total = %v, want %d", got, len(dupVals))
	}
	if got := r.metric(`sink_skipped_total{reason="decode"}`); got != 2 {
		t.Errorf("skipped for decode = %v, want 2", got)
	}
	log := r.log.String()
	for _, want := range []string{"topic=sensor-readings", "partition=", "offset=", "reason=decode", "control character"} {
		if !strings.Contains(log, want) {
			t.Errorf("log has no %q:\n%s", want, log)
		}
	}
	testkit.WaitFor(t, "ready", 10*time.Second, r.ready)
	testkit.WaitFor(t, "lag 0 on every partition", 10*time.Second, func() bool {
		total := 0.0
		for p := range stack.Partitions {
			total += r.metric(`sink_lag_records{partition="` + strconv.Itoa(p) + `",topic="sensor-readings"}`)
		}
		return total == 0
	})
	if err := r.stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}

	// A second sink in the same group finds every offset committed: it writes nothing.
	r2 := startSink(t, sinkEnv(k, certs, url))
	testkit.WaitFor(t, "second sink ready", 15*time.Second, r2.ready)
	time.Sleep(time.Second)
	if got := r2.metric("sink_records_total"); got != 0 {
		t.Fatalf("a restarted sink consumed %v records again; offsets were not committed", got)
	}
}

// TestSinkStartsBeforeTheDatabase starts the sink while PostgreSQL is down:
// it is not ready, it retries, and once the server is up it migrates the
// schema and writes everything.
func TestSinkStartsBeforeTheDatabase(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	c := pgcluster.ForTest(t)
	url, err := c.CreateDatabase(context.Background(), "late")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	devs := stack.Devices(2)
	keys, vals := encoded(devs, 1, 100)
	k.Produce(t, stack.Topic, keys, vals...)
	r := startSink(t, sinkEnv(k, certs, url))
	time.Sleep(time.Second)
	if r.ready() {
		t.Fatal("ready without a database")
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "all rows", 30*time.Second, func() bool { return countOnly(url) == len(vals) })
	testkit.WaitFor(t, "ready", 10*time.Second, r.ready)
}

// sinkWaitsOnALock reports whether a session of the sink waits for a lock.
func sinkWaitsOnALock(t *testing.T, conn *pgx.Conn) bool {
	t.Helper()
	var n int
	err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = 'cloud-forwarder-sink' AND wait_event_type = 'Lock'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestSinkMigrationBehindAHeldLock: another sink holds the migration lock
// (it is migrating) when this one starts. The migration is not bound by
// the connect timeout: it waits for the lock for the whole lock_timeout
// (twice the connect timeout here), then gives up with an error naming
// the lock and its holder, stays not ready, and tries again; once the lock
// is free it migrates and writes every reading.
func TestSinkMigrationBehindAHeldLock(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	url := pg.Database(t)
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "other-sink"
	other, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", schema.LockKey); err != nil {
		t.Fatal(err)
	}
	devs := stack.Devices(2)
	keys, vals := encoded(devs, 1, 50)
	k.Produce(t, stack.Topic, keys, vals...)

	const connectTimeout, lockTimeout = 2 * time.Second, 4 * time.Second
	start := time.Now()
	r := startSinkWith(t, sinkEnv(k, certs, url), func(s *Sink) {
		s.connectTimeout = connectTimeout
		s.migrate.LockTimeout = lockTimeout
	})
	testkit.WaitFor(t, "the sink waiting for the migration lock", 30*time.Second, func() bool { return sinkWaitsOnALock(t, other) })
	testkit.WaitFor(t, "the sink giving up on the lock", 60*time.Second, func() bool {
		return strings.Contains(r.log.String(), "schema migration waited too long for a lock")
	})
	if waited := time.Since(start); waited < lockTimeout {
		t.Errorf("gave up after %v, before lock_timeout %v", waited, lockTimeout)
	}
	log := r.log.String()
	for _, want := range []string{"migration lock", "lock_timeout 4s", "other-sink"} {
		if !strings.Contains(log, want) {
			t.Errorf("log does not say %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "context deadline exceeded") {
		t.Errorf("the migration was cut short by a deadline:\n%s", log)
	}
	if r.ready() {
		t.Fatal("ready without its schema")
	}
	testkit.WaitFor(t, "the sink trying again", 30*time.Second, func() bool { return sinkWaitsOnALock(t, other) })
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock($1)", schema.LockKey); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "every reading written", 30*time.Second, func() bool { return countOnly(url) == len(vals) })
	testkit.WaitFor(t, "ready", 10*time.Second, r.ready)
}
