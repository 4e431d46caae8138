package mqttpub_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/metricset"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/buffer/secret"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

const device = "pi-test-1"

func openBuffer(t testing.TB) *buffer.Buffer {
	t.Helper()
	b, err := buffer.Open(filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// countFrom tells cnt where b's seqs start (a fresh buffer's seqs start
// above its floor, not at 1) and returns that floor.
func countFrom(t testing.TB, cnt *broker.Counter, b *buffer.Buffer) uint64 {
	t.Helper()
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	cnt.From(device, st.SeqFloor)
	return st.SeqFloor
}

// appendN stores n readings spread over a few sensors, in batches.
func appendN(t testing.TB, b *buffer.Buffer, n int) {
	t.Helper()
	appendDevice(t, b, device, n)
}

// appendDevice is appendN for another device.
func appendDevice(t testing.TB, b *buffer.Buffer, dev string, n int) {
	t.Helper()
	const batch = 1000
	for done := 0; done < n; {
		k := min(batch, n-done)
		rs := make([]*reading.Reading, k)
		for i := range rs {
			rs[i] = &reading.Reading{
				DeviceID: dev, Sensor: fmt.Sprintf("sim-%d", (done+i)%4), Kind: "sim",
				TS: time.Now().UTC(), TimeSynced: true,
				Values: map[string]float64{reading.Temperature: 20 + float64(i%10)/10},
			}
		}
		if err := b.Append(context.Background(), rs...); err != nil {
			t.Fatal(err)
		}
		done += k
	}
}

type runner struct {
	p         *mqttpub.Publisher
	cancel    context.CancelFunc
	done      chan error
	pub       *vm.Counter
	connErrs  *vm.Counter
	delivered *vm.Counter
	confirmed *vm.Counter
	resent    *vm.Counter
	bad       *metricset.CounterVec
}

func start(t *testing.T, q mqttpub.Queue, o mqttpub.Options) *runner {
	t.Helper()
	set := metricset.New()
	r := &runner{
		pub:       set.Counter("published", ""),
		connErrs:  set.Counter("connect_errors", ""),
		delivered: set.Counter("delivered", ""),
		confirmed: set.Counter("confirmed", ""),
		resent:    set.Counter("resent", ""),
		bad:       set.CounterVec("bad", "", "reason"),
		done:      make(chan error, 1),
	}
	o.DeviceID = device
	o.Metrics.Published = r.pub
	o.Metrics.ConnectErrors = r.connErrs
	o.Metrics.Delivered = r.delivered
	o.Metrics.Confirmed = r.confirmed
	o.Metrics.Resent = r.resent
	o.Metrics.BadConfirms = r.bad
	if o.MinBackoff == 0 {
		o.MinBackoff = 20 * time.Millisecond
		o.MaxBackoff = 300 * time.Millisecond
	}
	p, err := mqttpub.New(q, o)
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *runner) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		r.done <- nil // later stops return at once
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancel")
	}
}

func waitEmpty(t *testing.T, b *buffer.Buffer, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := b.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("buffer still holds %d readings after %v", st.Count, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDrainsBacklogThenLiveReadings(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	appendN(t, b, 5000)

	r := start(t, b, mqttpub.Options{URL: br.URL()})
	cnt.WaitAll(t, device, f+5000, 30*time.Second)
	appendN(t, b, 500) // live readings while connected
	cnt.WaitAll(t, device, f+5500, 10*time.Second)
	waitEmpty(t, b, 5*time.Second)

	if !r.p.Connected() {
		t.Error("Connected() = false while draining")
	}
	if got := statusOf(t, br.Retained("sensors/"+device+"/status")); got.State != "online" {
		t.Errorf("retained status = %+v, want online", got)
	}
	rep := cnt.Report(device)
	if rep.MissingCount != 0 || len(rep.Bad) != 0 || rep.Duplicates != 0 {
		t.Errorf("report %+v; want no missing, no bad, no duplicates on a clean run", rep)
	}
	// The counter is bumped right after the Delete that emptied the buffer.
	for deadline := time.Now().Add(2 * time.Second); r.pub.Get() != 5500 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.pub.Get(); got != 5500 {
		t.Errorf("published metric = %v, want 5500", got)
	}
	r.stop(t)
	if got := statusOf(t, br.Retained("sensors/"+device+"/status")); got.State != "offline" {
		t.Errorf("retained status after stop = %+v, want offline", got)
	}
}

// statusOf decodes a retained status message.
func statusOf(t *testing.T, payload string) heartbeat.Heartbeat {
	t.Helper()
	st, err := heartbeat.Decode([]byte(payload))
	if err != nil {
		t.Fatalf("status %q: %v", payload, err)
	}
	return st
}

func TestOrderPerSensorIsKept(t *testing.T) {
	var mu sync.Mutex
	last := map[string]uint64{}
	var disorder []string
	br := broker.New(t, broker.Options{
		Filter: "sensors/+/+/reading",
		Inline: func(topic string, payload []byte) {
			r, err := reading.Decode(payload)
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if r.Seq <= last[r.Sensor] {
				disorder = append(disorder, fmt.Sprintf("%s: %d after %d", r.Sensor, r.Seq, last[r.Sensor]))
			}
			last[r.Sensor] = r.Seq
		},
	})
	b := openBuffer(t)
	appendN(t, b, 3000)
	start(t, b, mqttpub.Options{URL: br.URL(), Window: 500})
	waitEmpty(t, b, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(disorder) > 0 {
		t.Fatalf("%d out-of-order readings, first %v", len(disorder), disorder[:min(5, len(disorder))])
	}
}

func TestTLSWithPasswordAndCAFile(t *testing.T) {
	ca := pki.New(t)
	br := broker.New(t, broker.Options{TLS: ca.Server, Users: map[string]string{device: "s3cret-pass", "counter": "c"}})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.TLSURL(), TLS: ca.Client(), Username: "counter", Password: "c"})
	b := openBuffer(t)
	appendN(t, b, 1000)
	var logs testkit.LogBuffer
	start(t, b, mqttpub.Options{URL: br.TLSURL(), CAFile: ca.CAFile, Username: device, Password: secret.Secret("s3cret-pass"), Logger: logs.Logger()})
	cnt.WaitAll(t, device, countFrom(t, cnt, b)+1000, 20*time.Second)
	if strings.Contains(logs.String(), "s3cret-pass") {
		t.Fatal("password in the log")
	}
}

// TestConnectFailures: each broken setup logs a clear line, retries with
// backoff, keeps the readings, and never ends Run.
func TestConnectFailures(t *testing.T) {
	ca := pki.New(t)
	other := pki.New(t) // a CA the broker's certificate does not chain to
	br := broker.New(t, broker.Options{TLS: ca.Server, Users: map[string]string{device: "right"}})
	for _, tc := range []struct {
		name string
		o    mqttpub.Options
		hint string
	}{
		{"bad credentials", mqttpub.Options{URL: br.TLSURL(), CAFile: ca.CAFile, Username: device, Password: secret.Secret("wrong-password")}, "mqtt.username"},
		{"wrong CA", mqttpub.Options{URL: br.TLSURL(), CAFile: other.CAFile, Username: device, Password: secret.Secret("right")}, "mqtt.ca_file"},
		{"unreachable host", mqttpub.Options{URL: "tcp://127.0.0.1:1", ConnectTimeout: time.Second}, "cannot reach the broker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := openBuffer(t)
			appendN(t, b, 100)
			var logs testkit.LogBuffer
			tc.o.Logger = logs.Logger()
			tc.o.MinBackoff, tc.o.MaxBackoff = 50*time.Millisecond, 400*time.Millisecond
			r := start(t, b, tc.o)
			time.Sleep(1500 * time.Millisecond)
			select {
			case err := <-r.done:
				t.Fatalf("Run returned %v; it must keep retrying", err)
			default:
			}
			out := logs.String()
			if !strings.Contains(out, "mqtt connect failed") || !strings.Contains(out, tc.hint) {
				t.Fatalf("log lacks a clear line with %q:\n%s", tc.hint, out)
			}
			if strings.Contains(out, "wrong-password") || strings.Contains(out, "right") && tc.name != "unreachable host" && strings.Contains(out, "=right") {
				t.Fatal("password in the log")
			}
			attempts := r.connErrs.Get()
			// 1.5s with delays growing 25-50ms, 50-100, 100-200, 200-400, then capped:
			// a handful of attempts, not a busy loop.
			if attempts < 3 || attempts > 15 {
				t.Fatalf("%v connect attempts in 1.5s; want backoff between 3 and 15", attempts)
			}
			if st, _ := b.Stats(); st.Count != 100 {
				t.Fatalf("buffer holds %d readings, want all 100 kept", st.Count)
			}
			if r.p.Connected() {
				t.Fatal("Connected() = true")
			}
		})
	}
}

// steady appends readings at about rate per second until ctx ends and
// returns how many it appended.
func steady(ctx context.Context, t *testing.T, b *buffer.Buffer, rate int) <-chan int {
	out := make(chan int, 1)
	go func() {
		n := 0
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				out <- n
				return
			case <-tick.C:
			}
			r := &reading.Reading{DeviceID: device, Sensor: "sim-steady", Kind: "sim", TS: time.Now().UTC(), TimeSynced: true,
				Values: map[string]float64{reading.Temperature: 21}}
			if err := b.Append(context.Background(), r); err != nil {
				t.Error(err)
				out <- n
				return
			}
			n++
		}
	}()
	return out
}

func TestBrokerOutage(t *testing.T) {
	cnt := broker.NewCounter()
	br := broker.New(t, broker.Options{Inline: cnt.Add, Filter: "sensors/+/+/reading"})
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	var logs testkit.LogBuffer
	r := start(t, b, mqttpub.Options{URL: br.URL(), KeepAlive: time.Second, PingTimeout: time.Second, Logger: logs.Logger()})
	ctx, stopGen := context.WithCancel(context.Background())
	gen := steady(ctx, t, b, 200)

	time.Sleep(time.Second)
	br.Stop()
	time.Sleep(2 * time.Second)
	if st, _ := b.Stats(); st.Count < 200 {
		t.Errorf("only %d readings buffered during the outage", st.Count)
	}
	if err := br.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	stopGen()
	n := <-gen
	cnt.WaitAll(t, device, f+uint64(n), 20*time.Second)
	waitEmpty(t, b, 5*time.Second)
	rep := cnt.Report(device)
	t.Logf("outage: %d readings, %d duplicates", n, rep.Duplicates)
	if rep.MaxSeq != f+uint64(n) || rep.MissingCount != 0 || rep.Duplicates > n/10 {
		t.Fatalf("report %+v for %d readings", rep, n)
	}
	if !strings.Contains(logs.String(), "mqtt connection lost") {
		t.Errorf("no log line for the lost connection:\n%s", logs.String())
	}
	_ = r
}

func TestBlackholedLink(t *testing.T) {
	br := broker.New(t, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()}) // direct, not through the proxy
	px := tcpproxy.New(t, br.Addr)
	b := openBuffer(t)
	f := countFrom(t, cnt, b)
	var logs testkit.LogBuffer
	start(t, b, mqttpub.Options{URL: "tcp://" + px.Addr(), KeepAlive: time.Second, PingTimeout: time.Second,
		AckTimeout: 2 * time.Second, ConnectTimeout: time.Second, Logger: logs.Logger()})
	ctx, stopGen := context.WithCancel(context.Background())
	gen := steady(ctx, t, b, 200)

	time.Sleep(time.Second)
	px.SetMode(tcpproxy.Blackhole)
	time.Sleep(4 * time.Second)
	px.SetMode(tcpproxy.Pass)
	time.Sleep(time.Second)
	stopGen()
	n := <-gen
	cnt.WaitAll(t, device, f+uint64(n), 30*time.Second)
	waitEmpty(t, b, 5*time.Second)
	rep := cnt.Report(device)
	t.Logf("black hole: %d readings, %d duplicates", n, rep.Duplicates)
	if rep.MaxSeq != f+uint64(n) || rep.MissingCount != 0 || rep.Duplicates > n/5 {
		t.Fatalf("report %+v for %d readings", rep, n)
	}
	out := logs.String()
	if !strings.Contains(out, "mqtt connection lost") && !strings.Contains(out, "no PUBACK in time") {
		t.Errorf("no log line for the dead link:\n%s", out)
	}
}

// TestStopWhileConnecting: a broker address that accepts TCP but never
// answers (a black hole) must not hold up shutdown for the 15s connect
// timeout.
func TestStopWhileConnecting(t *testing.T) {
	br := broker.New(t, broker.Options{})
	px := tcpproxy.New(t, br.Addr)
	px.SetMode(tcpproxy.Blackhole)
	b := openBuffer(t)
	r := start(t, b, mqttpub.Options{URL: "tcp://" + px.Addr()})
	time.Sleep(300 * time.Millisecond)
	began := time.Now()
	r.stop(t)
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("stop took %v while connecting", d)
	}
}

// TestStopOnBlackholedLink: SIGTERM while the link is a black hole with
// publishes in flight: Run still returns well inside systemd's 5s budget.
func TestStopOnBlackholedLink(t *testing.T) {
	br := broker.New(t, broker.Options{})
	px := tcpproxy.New(t, br.Addr)
	b := openBuffer(t)
	appendN(t, b, 20000)
	r := start(t, b, mqttpub.Options{URL: "tcp://" + px.Addr()})
	for !r.p.Connected() {
		time.Sleep(5 * time.Millisecond)
	}
	px.SetMode(tcpproxy.Blackhole)
	time.Sleep(200 * time.Millisecond)
	began := time.Now()
	r.stop(t)
	if d := time.Since(began); d > 3500*time.Millisecond {
		t.Fatalf("stop took %v on a black-holed link", d)
	}
}
