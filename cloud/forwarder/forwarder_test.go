package forwarder_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/cloud/forwarder"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// running is a forwarder started by a test.
type running struct {
	addr string // HTTP address
	stop func() error
}

func start(t *testing.T, env map[string]string) *running {
	t.Helper()
	cfg, err := config.Load("", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	addrCh := make(chan string, 1)
	// Kept, and shown when the test fails: a reading held or late has its
	// reason in the log (a run under load in CI is not run again by hand).
	var logs testkit.LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	t.Cleanup(func() { // after the stop below (cleanups run last first)
		if lines := strings.Split(strings.TrimSpace(logs.String()), "\n"); t.Failed() && lines[0] != "" {
			t.Logf("forwarder %s log (last %d lines):\n%s", cfg.ID, min(len(lines), 200), strings.Join(lines[max(0, len(lines)-200):], "\n"))
		}
	})
	f, err := forwarder.New(cfg, forwarder.Options{Logger: log.With("fwd", cfg.ID), Listening: func(a string) { addrCh <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	r := &running{addr: <-addrCh}
	stopped := false
	var stopErr error
	r.stop = func() error {
		if stopped {
			return stopErr
		}
		stopped = true
		cancel()
		select {
		case stopErr = <-done:
		case <-time.After(15 * time.Second):
			stopErr = fmt.Errorf("forwarder did not stop within 15s")
		}
		return stopErr
	}
	t.Cleanup(func() { _ = r.stop() })
	waitReady(t, r.addr, 20*time.Second)
	return r
}

func waitReady(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if code, _ := get(addr, "/readyz"); code == 200 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body := get(addr, "/readyz")
	t.Fatalf("forwarder not ready after %v: %d %s", d, code, body)
}

func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of an unlabelled series from /metrics.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	_, body := get(addr, "/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// checkReadings verifies every (device, seq) in devs x [1,n] arrived exactly
// as the contract says, and returns how many duplicates there were.
func checkReadings(t *testing.T, recs []kafka.Record, devs []string, n uint64, fwdIDs ...string) int {
	t.Helper()
	type id struct {
		dev string
		seq uint64
	}
	seen := map[id]int{}
	okFwd := map[string]bool{}
	for _, f := range fwdIDs {
		okFwd[f] = true
	}
	for _, r := range recs {
		rd, err := reading.Decode(r.Value)
		if err != nil {
			t.Fatalf("record %s[%d]@%d does not decode: %v", r.Topic, r.Partition, r.Offset, err)
		}
		seen[id{rd.DeviceID, rd.Seq}]++
		want := map[string]string{
			"mqtt_topic": stack.ReadingTopic(rd.DeviceID), "device_id": rd.DeviceID,
			"seq": strconv.FormatUint(rd.Seq, 10),
		}
		for k, v := range want {
			if r.Headers[k] != v {
				t.Fatalf("record %s/%d header %s = %q, want %q", rd.DeviceID, rd.Seq, k, r.Headers[k], v)
			}
		}
		if !okFwd[r.Headers["forwarder_id"]] {
			t.Fatalf("forwarder_id header %q, want one of %v", r.Headers["forwarder_id"], fwdIDs)
		}
		if r.Key != rd.DeviceID {
			t.Fatalf("key %q, want %q", r.Key, rd.DeviceID)
		}
		if p := kafka.Partition(r.Key, stack.Partitions); r.Partition != p {
			t.Fatalf("key %q on partition %d, murmur2 says %d", r.Key, r.Partition, p)
		}
		if !r.Time.Equal(rd.TS) {
			t.Fatalf("record time %v, want reading ts %v", r.Time, rd.TS)
		}
	}
	dups, missing := 0, 0
	for _, d := range devs {
		for s := uint64(1); s <= n; s++ {
			c := seen[id{d, s}]
			if c == 0 {
				missing++
				if missing < 5 {
					t.Errorf("missing %s seq %d", d, s)
				}
			}
			dups += max(c-1, 0)
		}
	}
	if missing > 0 {
		t.Fatalf("%d readings missing (of %d; %d records read)", missing, len(devs)*int(n), len(recs))
	}
	return dups
}

func TestHappyPath(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	fwd := start(t, stack.Env(b, k, certs, "fwd-happy"))

	devs := stack.Devices(8)
	const n = 100
	pub := stack.NewPublisher(t, b, certs, "pub-happy")
	pub.PublishReadings(t, devs, 1, n)

	recs := k.ReadN(t, stack.Topic, len(devs)*n, 30*time.Second, 200*time.Millisecond)
	if dups := checkReadings(t, recs, devs, n, "fwd-happy"); dups != 0 {
		t.Errorf("%d duplicates without any failure", dups)
	}
	// Per-device order holds on the happy path (one partition per key).
	last := map[string]uint64{}
	for _, r := range recs {
		rd, _ := reading.Decode(r.Value)
		if rd.Seq <= last[rd.DeviceID] {
			t.Fatalf("%s: seq %d after %d", rd.DeviceID, rd.Seq, last[rd.DeviceID])
		}
		last[rd.DeviceID] = rd.Seq
	}
	waitMetric(t, fwd.addr, "forwarder_acked_total", float64(len(devs)*n))
	if got := metric(t, fwd.addr, "forwarder_produced_total"); got != float64(len(devs)*n) {
		t.Errorf("forwarder_produced_total = %v, want %d", got, len(devs)*n)
	}
	if code, _ := get(fwd.addr, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if err := fwd.stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
}

func waitMetric(t *testing.T, addr, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := metric(t, addr, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBadCredentials: the forwarder keeps retrying, says why, stays not
// ready, and never logs the password.
func TestBadCredentials(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	env := stack.Env(b, k, certs, "fwd-badpw")
	env["HIVEMQ_PASSWORD"] = "wrong-password-xyz"
	addr, logs, stop := startLogged(t, env)
	waitLog(t, logs, "mqtt connect failed")
	if code, _ := get(addr, "/readyz"); code != 503 {
		t.Errorf("/readyz = %d with bad credentials", code)
	}
	stop()
	for _, secret := range []string{"wrong-password-xyz", stack.KafkaSecret} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("log contains a secret:\n%s", logs)
		}
	}
}

// TestSubscribeRefused: a broker that refuses the SUBSCRIBE (SUBACK 0x80)
// leaves the forwarder not ready and saying why, not silently idle; a
// shared one too (paho files its result under the filter without
// "$share/GROUP/").
func TestSubscribeRefused(t *testing.T) {
	for _, group := range []string{"", "fwd"} {
		t.Run("share_group="+group, func(t *testing.T) {
			certs := pki.New(t)
			b := stack.StartBroker(t, certs, stack.BrokerOptions{DenySubscribe: true})
			k := stack.StartKafka(t, certs)
			env := stack.Env(b, k, certs, "fwd-denied")
			env["FORWARDER_SHARE_GROUP"] = group
			addr, logs, stop := startLogged(t, env)
			waitLog(t, logs, "refused the subscription")
			if code, body := get(addr, "/readyz"); code != 503 || !strings.Contains(body, "mqtt_subscribed=false") {
				t.Errorf("/readyz = %d %q while the broker refuses the subscription", code, body)
			}
			stop()
		})
	}
}

// startLogged runs a forwarder configured by env, logging JSON into the
// returned buffer; stop cancels it and waits for Run to return.
func startLogged(t *testing.T, env map[string]string) (addr string, logs *testkit.LogBuffer, stop func()) {
	t.Helper()
	cfg, err := config.Load("", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	logs = &testkit.LogBuffer{}
	addrCh := make(chan string, 1)
	f, err := forwarder.New(cfg, forwarder.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Listening: func(a string) { addrCh <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	return <-addrCh, logs, func() {
		t.Helper()
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
		}
	}
}

// waitLog waits up to 10 s for text to appear in logs.
func waitLog(t *testing.T, logs *testkit.LogBuffer, text string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), text); {
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged:\n%s", text, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStartupWarnings: plaintext to hosts that are not loopback (allowed by
// FORWARDER_INSECURE) is logged at warning level when run starts, with
// where the forwarder id came from.
func TestStartupWarnings(t *testing.T) {
	env := map[string]string{ // TEST-NET-1: never answers, and need not
		"HIVEMQ_URL": "tcp://192.0.2.1:1883", "CONFLUENT_BOOTSTRAP_SERVER_SASL": "192.0.2.1:9092",
		"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "FORWARDER_INSECURE": "true",
		"FORWARDER_ID": "fwd-warn", "FORWARDER_LISTEN": "127.0.0.1:0",
	}
	_, logs, stop := startLogged(t, env)
	waitLog(t, logs, `"msg":"forwarder started"`)
	stop()
	for _, want := range []string{
		`"level":"WARN","msg":"HIVEMQ_URL: plaintext MQTT to 192.0.2.1:1883`,
		`"level":"WARN","msg":"KAFKA_SECURITY_PROTOCOL: plaintext Kafka to 192.0.2.1:9092`,
		`"id":"fwd-warn","id_from":"FORWARDER_ID"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

// TestRunEndsItsGoroutines: when Run returns, no goroutine the forwarder
// started is left (feeder, acker, probe, confirmer, subscriber, connection
// flushers, retry timers, producer): after a stop in the middle of traffic,
// and after a stop while the broker swallows the connection attempt.
func TestRunEndsItsGoroutines(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	t.Run("traffic", func(t *testing.T) {
		fwd := start(t, stack.Env(b, k, certs, "fwd-goroutines"))
		pub := stack.NewPublisher(t, b, certs, "pub-goroutines")
		pub.PublishReadings(t, stack.Devices(4), 1, 50)
		waitMetric(t, fwd.addr, "forwarder_acked_total", 200)
		pub.PublishReadings(t, stack.Devices(4), 51, 60)
		if err := fwd.stop(); err != nil {
			t.Fatal(err)
		}
		checkNoGoroutines(t)
	})
	t.Run("connecting", func(t *testing.T) {
		hole := tcpproxy.New(t, b.TLSAddr)
		hole.SetMode(tcpproxy.Blackhole) // TCP connects, the TLS handshake never ends
		env := stack.Env(b, k, certs, "fwd-goroutines-2")
		env["HIVEMQ_URL"] = "ssl://" + hole.Addr()
		_, logs, stop := startLogged(t, env)
		waitLog(t, logs, "forwarder started")
		time.Sleep(200 * time.Millisecond) // the dial is under way
		stop()
		checkNoGoroutines(t)
		// paho's connect goroutine runs our dialer: the stop cancels its
		// handshake rather than leaving it for the 10 s connect timeout.
		for deadline := time.Now().Add(2 * time.Second); strings.Contains(goroutines(), "dialMQTT"); {
			if time.Now().After(deadline) {
				t.Fatalf("the MQTT dial still runs 2 s after Run returned:\n%s", goroutines())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// checkNoGoroutines fails for every goroutine created by the forwarder's
// or the producer's code.
func checkNoGoroutines(t *testing.T) {
	t.Helper()
	for _, g := range strings.Split(goroutines(), "\n\n") {
		if strings.Contains(g, "created by github.com/edgepipe/sensorpipe/cloud/forwarder.") ||
			strings.Contains(g, "created by github.com/edgepipe/sensorpipe/cloud/kafkaout.") {
			t.Errorf("goroutine left after Run returned:\n%s", g)
		}
	}
}
