package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// binPath is the cloud-forwarder binary built once by TestMain.
var binPath string

func TestMain(m *testing.M) {
	testkit.Main(m, &binPath, "github.com/edgepipe/sensorpipe/cloud/cmd/cloud-forwarder")
}

type proc struct {
	cmd  *exec.Cmd
	addr string
	log  *testkit.LogBuffer
	done chan error
}

// spawn starts the real binary's run command with env and waits for /readyz.
func spawn(t *testing.T, env map[string]string) *proc {
	t.Helper()
	return spawnCmd(t, "run", "FORWARDER_LISTEN", env)
}

// spawnCmd starts the real binary's command with env, listening where
// listenKey says, and waits for /readyz.
func spawnCmd(t *testing.T, command, listenKey string, env map[string]string) *proc {
	t.Helper()
	p := startCmd(t, command, listenKey, env)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + p.addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready; log:\n%s", command, p.log)
	return nil
}

// startCmd starts the real binary's command with env, listening where
// listenKey says, without waiting for it to be ready.
func startCmd(t *testing.T, command, listenKey string, env map[string]string) *proc {
	t.Helper()
	p := &proc{addr: testkit.FreeAddr(t), log: &testkit.LogBuffer{}, done: make(chan error, 1)}
	env[listenKey] = p.addr
	p.cmd = exec.Command(binPath, command)
	p.cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s log:\n%s", command, p.log)
		}
		p.done <- nil // let a second cleanup of the same proc pass
	})
	return p
}

// TestCrashAndRestart SIGKILLs the forwarder mid-stream and restarts it with
// the same client id: the broker redelivers what was not acked, so nothing
// is missing; duplicates are allowed and counted. Every reading ends up
// confirmed to its device once the devices re-send what the crash left
// unconfirmed.
func TestCrashAndRestart(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{MaxInflight: 10000})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", "sensors/+/ack")
	env := stack.Env(b, k, certs, "fwd-crash")
	p1 := spawn(t, env)

	devs := stack.Devices(5)
	const n = 600
	pub := stack.NewPublisher(t, b, certs, "pub-crash")
	published := make(chan struct{})
	go func() {
		defer close(published)
		for s := uint64(1); s <= n; s += 20 {
			pub.PublishReadings(t, devs, s, s+19)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	// Kill while messages are in flight (received, not yet acked), a third of the way in.
	for testkit.Metric(p1.addr, "forwarder_produced_total") < float64(len(devs)*n/3) || testkit.Metric(p1.addr, "forwarder_in_flight") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("forwarder made no progress")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := p1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p1.done
	p1.done <- nil
	killedAt := testkit.Metric(p1.addr, "forwarder_produced_total") // -1: gone
	<-published

	p2 := spawn(t, env)
	recs := k.ReadN(t, stack.Topic, len(devs)*n, 60*time.Second, 500*time.Millisecond)
	seen := map[string]int{}
	for _, r := range recs {
		rd, err := reading.Decode(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		seen[rd.DeviceID+"/"+strconv.FormatUint(rd.Seq, 10)]++
	}
	missing, dups := 0, 0
	for _, d := range devs {
		for s := 1; s <= n; s++ {
			c := seen[d+"/"+strconv.Itoa(s)]
			if c == 0 {
				missing++
			}
			dups += max(c-1, 0)
		}
	}
	if missing > 0 {
		t.Fatalf("%d readings missing after SIGKILL and restart (%d records read)", missing, len(recs))
	}
	t.Logf("SIGKILL mid-stream: %d records for %d readings, %d duplicates (killed process answered %v)",
		len(recs), len(devs)*n, dups, killedAt)

	// What the killed process had acked on MQTT but not yet confirmed stays
	// unconfirmed: a device re-sends it after its confirm timeout. Do what
	// the devices would, then every reading must end up confirmed.
	unconfirmed := func() map[string][]uint64 {
		out := map[string][]uint64{}
		for _, d := range devs {
			got := acks.Confirmed("sensors/" + d + "/ack")
			for s := uint64(1); s <= n; s++ {
				if got[s] == 0 {
					out[d] = append(out[d], s)
				}
			}
		}
		return out
	}
	resent := 0
	for d, seqs := range unconfirmed() {
		for _, s := range seqs {
			pub.Publish(t, stack.ReadingTopic(d), reading.Encode(nil, stack.Reading(d, s)))
			resent++
		}
	}
	for deadline := time.Now().Add(15 * time.Second); len(unconfirmed()) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("readings never confirmed after the re-send: %v", unconfirmed())
		}
	}
	t.Logf("re-sent %d readings left unconfirmed by the crash; all %d confirmed", resent, len(devs)*n)

	// Graceful stop: SIGTERM, exit 0 within 10 s.
	start := time.Now()
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p2.done:
		p2.done <- nil
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p2.log)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10 s of SIGTERM")
	}
	t.Logf("SIGTERM to exit: %v", time.Since(start).Round(time.Millisecond))
	for _, secret := range []string{stack.MQTTPassword, stack.KafkaSecret} {
		if strings.Contains(p2.log.String(), secret) || strings.Contains(p1.log.String(), secret) {
			t.Errorf("a secret appears in the log")
		}
	}
	if !strings.HasPrefix(p2.log.String(), "{") {
		t.Errorf("log is not JSON when not on a terminal: %.200s", p2.log)
	}
}

// TestSIGTERMWhileKafkaDown stops the forwarder while it holds messages Kafka
// cannot take: it waits the default FORWARDER_SHUTDOWN_TIMEOUT, acks nothing,
// still exits within 10 s (status 1), and after a restart nothing is missing.
func TestSIGTERMWhileKafkaDown(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	env := stack.Env(b, k, certs, "fwd-term")
	p := spawn(t, env)
	devs := stack.Devices(3)
	pub := stack.NewPublisher(t, b, certs, "pub-term")
	k.Cut()
	pub.PublishReadings(t, devs, 1, 50)
	// Stop while the forwarder holds every one of them, not before they arrived.
	testkit.WaitFor(t, "the forwarder to hold the readings Kafka cannot take", 10*time.Second, func() bool {
		return testkit.Metric(p.addr, "forwarder_received_total") >= float64(len(devs)*50)
	})
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.done:
		p.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10 s of SIGTERM")
	}
	var ee *exec.ExitError
	// Kafka never came back, so the in-flight records could not be flushed: exit 1, nothing acked.
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1 (unflushed records reported)", err)
	}
	d := time.Since(start)
	if d > 10*time.Second || d < 6*time.Second {
		t.Fatalf("took %v; want the 7 s default flush wait and an exit within 10 s", d)
	}
	t.Logf("SIGTERM with Kafka down: exit 1 after %v", d.Round(time.Millisecond))
	k.Restore()
	spawn(t, env)
	recs := k.ReadN(t, stack.Topic, len(devs)*50, 30*time.Second, 200*time.Millisecond)
	if len(recs) < len(devs)*50 {
		t.Fatalf("%d of %d readings after restart", len(recs), len(devs)*50)
	}
}

func TestConfigErrorExit2(t *testing.T) {
	cmd := exec.CommandContext(context.Background(), binPath, "run")
	cmd.Env = []string{"HIVEMQ_URL=ssl://broker.example.com:8883", "CONFLUENT_API_SECRET=hunter2"}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit = %v, want 2", err)
	}
	if !strings.Contains(string(out), "CONFLUENT_BOOTSTRAP_SERVER_SASL") || strings.Contains(string(out), "hunter2") {
		t.Fatalf("output should name the variable and no secret: %s", out)
	}
}

// TestRunConfigErrors: what config check would catch makes `run` exit 2
// naming the variable, never echoing a password: a CA file that is not PEM
// (it used to pass the check and exit 1 at every start, a restart loop),
// credentials inside URLs, and a container without FORWARDER_ID.
func TestRunConfigErrors(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"HIVEMQ_URL=ssl://broker.example.com:8883", "CONFLUENT_BOOTSTRAP_SERVER_SASL=pkc.example.com:9092",
		"CONFLUENT_API_KEY=key", "CONFLUENT_API_SECRET=hunter2", "FORWARDER_ID=fwd-1"}
	tests := []struct {
		name    string
		env     []string
		wantKey string
	}{
		{"mqtt ca not pem", []string{"HIVEMQ_CA_FILE=" + notPEM}, "HIVEMQ_CA_FILE"},
		{"kafka ca not pem", []string{"KAFKA_CA_FILE=" + notPEM}, "KAFKA_CA_FILE"},
		{"mqtt url credentials", []string{"HIVEMQ_URL=ssl://fwd:hunter2@broker.example.com"}, "HIVEMQ_URL"},
		{"bootstrap credentials", []string{"CONFLUENT_BOOTSTRAP_SERVER_SASL=key:hunter2@pkc.example.com:9092"}, "CONFLUENT_BOOTSTRAP_SERVER_SASL"},
		{"container without id", []string{"FORWARDER_ID=", "container=podman"}, "FORWARDER_ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.CommandContext(context.Background(), binPath, "run")
			cmd.Env = append(append([]string(nil), base...), tt.env...) // later entries win
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit = %v, want 2: %s", err, out)
			}
			if !strings.Contains(string(out), "cloud-forwarder: "+tt.wantKey+": ") || strings.Contains(string(out), "hunter2") {
				t.Fatalf("output should name %s and no secret: %s", tt.wantKey, out)
			}
		})
	}
}

// TestSinkRefusesWeakTLSToARemoteDatabase: a DATABASE_URL that would reach
// a remote host without sslmode=verify-full, as pgx reads it (PG*
// variables and a key given twice included), exits 2 naming the key,
// without printing the URL's password.
func TestSinkRefusesWeakTLSToARemoteDatabase(t *testing.T) {
	const remote = "postgres://sink:db-pass-42@db.example.com:5432/sensors"
	tests := []struct {
		name string
		env  []string
	}{
		{"no sslmode", []string{"DATABASE_URL=" + remote}},
		{"require", []string{"DATABASE_URL=" + remote + "?sslmode=require"}},
		{"verify-ca", []string{"DATABASE_URL=" + remote + "?sslmode=verify-ca"}},
		{"verify-full then disable", []string{"DATABASE_URL=" + remote + "?sslmode=verify-full&sslmode=disable"}},
		{"no host, PGHOST remote", []string{"DATABASE_URL=postgres://sink:db-pass-42@/sensors", "PGHOST=db.example.com"}},
	}
	for _, tc := range tests {
		cmd := exec.CommandContext(context.Background(), binPath, "sink")
		cmd.Env = append([]string{
			"CONFLUENT_BOOTSTRAP_SERVER_SASL=pkc.example.com:9092", "CONFLUENT_API_KEY=k", "CONFLUENT_API_SECRET=hunter2",
		}, tc.env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("%s: exit = %v, want 2\n%s", tc.name, err, out)
		}
		if !strings.Contains(string(out), "DATABASE_URL") || !strings.Contains(string(out), "verify-full") ||
			!strings.Contains(string(out), "db.example.com:5432") ||
			strings.Contains(string(out), "db-pass-42") || strings.Contains(string(out), "hunter2") {
			t.Fatalf("%s: output should name DATABASE_URL, the host and verify-full and no secret: %s", tc.name, out)
		}
	}
}

// sinkInTx counts the sink's database sessions with a transaction open.
func sinkInTx(ctx context.Context, conn *pgx.Conn) int {
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = 'cloud-forwarder-sink' AND xact_start IS NOT NULL`).Scan(&n); err != nil {
		return 0
	}
	return n
}

func rowCount(ctx context.Context, conn *pgx.Conn) (rows, distinct int) {
	_ = conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings").Scan(&rows, &distinct)
	return rows, distinct
}

// TestSinkKill9MidBatch SIGKILLs the real `cloud-forwarder sink`, writing
// with three lanes (sessions), three times while it has transactions open
// on a backlog (several at once when it can catch them), restarting it
// each time: the uncommitted batches are consumed again, and in the end
// every reading is exactly one row, counted by (device_id, seq).
func TestSinkKill9MidBatch(t *testing.T) {
	c := pgcluster.ForTest(t)
	ctx := context.Background()
	url, err := c.CreateDatabase(ctx, "kill9")
	if err != nil {
		t.Fatal(err)
	}
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	devs := stack.Devices(8)
	const n = 5000
	var keys []string
	var vals [][]byte
	for s := uint64(1); s <= n; s++ {
		for _, d := range devs {
			keys = append(keys, d)
			vals = append(vals, reading.Encode(nil, stack.Reading(d, s)))
		}
	}
	k.Produce(t, stack.Topic, keys, vals...)
	env := map[string]string{
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr,
		"CONFLUENT_API_KEY":               stack.KafkaUser,
		"CONFLUENT_API_SECRET":            stack.KafkaSecret,
		"KAFKA_CA_FILE":                   certs.CAFile,
		"DATABASE_URL":                    url,
		"SINK_BATCH_SIZE":                 "1000",
		"SINK_WRITERS":                    "3",
	}
	watch, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	total := len(vals)
	committed := 0 // rows in the table when the last incarnation was killed
	for kill := 1; kill <= 3; kill++ {
		p := spawnCmd(t, "sink", "SINK_LISTEN", env)
		deadline := time.Now().Add(30 * time.Second)
		several := time.Now().Add(5 * time.Second) // then one open transaction will do
		// Kill as soon as this incarnation has committed something and has
		// transactions open, so every kill lands mid-batch and leaves work
		// for the next one.
		open := 0
		for {
			rows, _ := rowCount(ctx, watch)
			if open = sinkInTx(ctx, watch); rows > committed && (open >= 2 || (open == 1 && time.Now().After(several))) {
				break
			}
			if rows == total || time.Now().After(deadline) {
				t.Fatalf("kill %d: no open transaction to kill (%d of %d rows in)", kill, rows, total)
			}
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		p.done <- nil
		committed, _ = rowCount(ctx, watch)
		t.Logf("kill %d: SIGKILL with open transactions: %d; %d of %d rows committed", kill, open, committed, total)
	}
	p := spawnCmd(t, "sink", "SINK_LISTEN", env)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if rows, _ := rowCount(ctx, watch); rows >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rows, distinct := rowCount(ctx, watch)
	var missing int
	if err := watch.QueryRow(ctx, `SELECT count(*) FROM unnest($1::text[]) d, generate_series(1, $2::bigint) s
		WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE r.device_id = d AND r.seq = s)`, devs, n).Scan(&missing); err != nil {
		t.Fatal(err)
	}
	if rows != total || distinct != total || missing != 0 {
		t.Fatalf("after 3 kills and a restart: %d rows, %d distinct, %d missing; want %d, no duplicates\n%s", rows, distinct, missing, total, p.log)
	}
	if dups := testkit.Metric(p.addr, "sink_duplicates_total"); dups < 0 {
		t.Errorf("no sink_duplicates_total on %s", p.addr)
	}
	t.Logf("%d readings, %d rows, 0 missing, 0 duplicate rows", total, rows)
}
