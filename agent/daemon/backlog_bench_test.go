package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// backlogN is the backlog the drain benchmarks build or prefill.
const backlogN = 100_000

// benchLink is a TLS mosquitto with a password file behind a proxy that
// can refuse the agent or put the broker at a distance, and a stand-in
// forwarder that confirms what reaches the broker (delivery: kafka).
type benchLink struct {
	ca    *pki.PKI
	proxy *tcpproxy.Proxy
	fwd   *broker.Prompt
}

const (
	benchDevice  = "pi-backlog"
	benchPass    = "backlog-pw"
	benchFwd     = "bench-forwarder"
	benchFwdPass = "forwarder-pw"
)

func newBenchLink(tb testing.TB) *benchLink {
	tb.Helper()
	ca := pki.New(tb)
	mq := broker.StartMosquitto(tb, broker.MosquittoConfig{PKI: ca, Users: map[string]string{benchDevice: benchPass, benchFwd: benchFwdPass}})
	p, err := tcpproxy.Listen("127.0.0.1:0", mq.Addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	// cloud-forwarder's default FORWARDER_CONFIRM_INTERVAL, with its early
	// confirmation every 1,000 seqs; its Kafka takes everything at once.
	fwd := broker.ConfirmPromptly(tb, broker.SubOptions{URL: "ssl://" + mq.Addr, TLS: ca.Client(),
		Username: benchFwd, Password: benchFwdPass}, time.Second)
	return &benchLink{ca: ca, proxy: p, fwd: fwd}
}

// benchAgent is one edge-agent process and what the benchmark samples of it.
type benchAgent struct {
	cmd    *exec.Cmd
	status string
	stderr testkit.LogBuffer
	done   chan struct{}

	// mem samples RssAnon (what the agent needs itself; RssFile is bbolt's
	// mapped file and the binary, which the kernel can drop) and VmHWM.
	mem *testkit.MemorySampler
	// peak is what mem saw, once stopped.
	peak testkit.Memory
}

// benchRun is how a benchmark runs the agent.
type benchRun struct {
	db       string        // the buffer file
	sensors  int           // sim sensors
	interval time.Duration // each sensor's
	// delivery is mqtt.delivery: "kafka" (the default, confirmed by the
	// link's stand-in forwarder) or "broker" (deleted at PUBACK, the
	// agent's own drain with nobody else pacing it).
	delivery string
	// prefix starts the binary by sh after it (testkit.MemoryCgroup's
	// JoinScript puts it in a cgroup first).
	prefix string
}

// startBenchAgent writes a config for r, publishing through l, and starts
// the binary.
func startBenchAgent(tb testing.TB, l *benchLink, r benchRun) *benchAgent {
	tb.Helper()
	dir := tb.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(benchPass+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	if r.delivery == "" {
		r.delivery = "kafka"
	}
	a := &benchAgent{status: testkit.FreeAddr(tb), done: make(chan struct{})}
	var sb strings.Builder
	fmt.Fprintf(&sb, `device_id: %s
buffer: {path: %s, when_full: drop}  # the drain of a full buffer of readings, as measured before downsampling
mqtt: {url: "ssl://%s", username: %s, password_file: %s, ca_file: %s, delivery: %s}
clock: {hold_unsynced: 0s}  # the host's clock may never report synced
status_listen: %s
log_format: json
log_level: warn
sensors:
`, benchDevice, r.db, l.proxy.Addr(), benchDevice, pw, l.ca.CAFile, r.delivery, a.status)
	for i := range r.sensors {
		fmt.Fprintf(&sb, "  - {name: sim-%d, driver: sim, interval: %v}\n", i, r.interval)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(sb.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	a.cmd = exec.Command(agentBin, "run", "--config", cfg)
	if r.prefix != "" {
		a.cmd = exec.Command("sh", "-c", r.prefix+`exec "$0" "$@"`, agentBin, "run", "--config", cfg)
	}
	a.cmd.Env = append(os.Environ(), strings.Fields(os.Getenv("BENCH_AGENT_ENV"))...) // e.g. "GOGC=50"
	a.cmd.Stderr = &a.stderr
	if err := a.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	tb.Cleanup(func() { _ = a.cmd.Process.Kill(); <-a.done })
	a.mem = testkit.SampleMemory(a.cmd.Process.Pid, 20*time.Millisecond)
	return a
}

// metric reads one series from the agent's /metrics; -1 when unavailable.
func (a *benchAgent) metric(series string) float64 {
	resp, err := http.Get("http://" + a.status + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return metricValue(string(body), series)
}

// waitMetric polls series (every 50 ms: the agent is another process)
// until cond holds; it returns when it did.
func (a *benchAgent) waitMetric(tb testing.TB, series string, timeout time.Duration, cond func(float64) bool) time.Time {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		v := a.metric(series)
		if v >= 0 && cond(v) {
			return time.Now()
		}
		select {
		case <-a.done:
			tb.Fatalf("edge-agent exited: %s", a.stderr.String())
		case <-deadline.C:
			tb.Fatalf("%s = %v after %v", series, v, timeout)
		case <-tick.C:
		}
	}
}

// stop ends the process (SIGTERM) and the sampling.
func (a *benchAgent) stop(tb testing.TB) {
	tb.Helper()
	a.peak = a.mem.Stop()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		tb.Fatalf("edge-agent did not stop: %s", a.stderr.String())
	}
	if path := os.Getenv("BENCH_AGENT_STDERR"); path != "" { // e.g. with BENCH_AGENT_ENV=GODEBUG=gctrace=1
		_ = os.WriteFile(path, []byte(a.stderr.String()), 0o644)
	}
}

// caughtUp is the buffer depth below which a drain counts as done: the
// sensors keep adding readings while it drains.
const caughtUp = 1000

// BenchmarkBacklog runs the real edge-agent against a TLS mosquitto with a
// password file, through a proxy that refuses the link or delays it.
//
//   - build_and_drain/delivery=X: one process, 32 sim sensors every 10 ms
//     (3,200 readings/s), link refused until the buffer holds 100,000
//     readings, then open (no delay). With delivery=kafka (the default) a
//     stand-in forwarder confirms what reaches the broker as cloud-forwarder
//     does (every second, at once when 1,000 wait) and the agent deletes at
//     the confirmation; with delivery=broker it deletes at the PUBACK. The
//     reconnect backoff is not timed: readings/s (deleted from the buffer)
//     runs from the first publish after the link opened until the buffer is
//     below 1,000. RssAnon-MiB is the peak of RssAnon sampled every 20 ms
//     over the process's whole life, VmHWM-MiB its peak resident set
//     (counting bbolt's mapped file).
//   - drain/broker_rtt=X: a fresh process on a prefilled 100,000 backlog,
//     4 sim sensors at 1 Hz, the broker X away (BENCH_RTTS), delivery=broker
//     (the agent's own drain, nobody else pacing it); readings/s from
//     process start until the buffer is below 1,000.
func BenchmarkBacklog(b *testing.B) {
	l := newBenchLink(b)
	for _, delivery := range []string{"kafka", "broker"} {
		b.Run("build_and_drain/delivery="+delivery, func(b *testing.B) {
			for b.Loop() {
				buildAndDrain(b, l, delivery)
			}
		})
	}
	for _, rtt := range testkit.BenchRTTs(b) {
		b.Run(fmt.Sprintf("drain/broker_rtt=%dms", rtt.Milliseconds()), func(b *testing.B) {
			for b.Loop() {
				db := filepath.Join(b.TempDir(), "buffer.db")
				prefill(b, db, benchDevice, backlogN)
				l.proxy.SetMode(tcpproxy.Pass)
				l.proxy.SetDelay(rtt/2, rtt/20)
				start := time.Now()
				a := startBenchAgent(b, l, benchRun{db: db, sensors: 4, interval: time.Second, delivery: "broker"})
				end := a.waitMetric(b, "edge_agent_buffer_readings", 180*time.Second, func(v float64) bool { return v < caughtUp })
				published := a.metric("edge_agent_published_total")
				a.stop(b)
				b.ReportMetric(published/end.Sub(start).Seconds(), "readings/s")
				b.ReportMetric(float64(a.peak.RssAnon)/1024, "RssAnon-MiB")
				b.ReportMetric(float64(a.peak.VmHWM)/1024, "VmHWM-MiB")
				b.Logf("drained %.0f readings in %v with the broker %v away; peak RssAnon %d KiB, VmHWM %d KiB",
					published, end.Sub(start).Round(time.Millisecond), rtt, a.peak.RssAnon, a.peak.VmHWM)
			}
		})
	}
}

// buildAndDrain is one run of build_and_drain.
func buildAndDrain(b *testing.B, l *benchLink, delivery string) {
	l.proxy.SetDelay(0, 0)
	l.proxy.SetMode(tcpproxy.Refuse)
	a := startBenchAgent(b, l, benchRun{db: filepath.Join(b.TempDir(), "buffer.db"), sensors: 32, interval: 10 * time.Millisecond, delivery: delivery})
	a.waitMetric(b, "edge_agent_buffer_readings", 120*time.Second, func(v float64) bool { return v >= backlogN })
	l.proxy.SetMode(tcpproxy.Pass)
	a.waitMetric(b, "edge_agent_published_total", 60*time.Second, func(v float64) bool { return v > 0 })
	start := time.Now()
	d0 := a.metric("edge_agent_delivered_total")
	end := a.waitMetric(b, "edge_agent_buffer_readings", 120*time.Second, func(v float64) bool { return v < caughtUp })
	d1, pub := a.metric("edge_agent_delivered_total"), a.metric("edge_agent_published_total")
	a.stop(b)
	b.ReportMetric((d1-d0)/end.Sub(start).Seconds(), "readings/s")
	b.ReportMetric(float64(a.peak.RssAnon)/1024, "RssAnon-MiB")
	b.ReportMetric(float64(a.peak.VmHWM)/1024, "VmHWM-MiB")
	b.Logf("delivery=%s: built %d, deleted %.0f readings in %v (%.0f published); peak RssAnon %d KiB, VmHWM %d KiB",
		delivery, backlogN, d1-d0, end.Sub(start).Round(time.Millisecond), pub, a.peak.RssAnon, a.peak.VmHWM)
}

// fillBuffer appends readings to the buffer at path until it holds its
// max_bytes (256 MiB, the default) and starts dropping the oldest
// (when_full: drop: the worst case for the drain is a buffer full of
// readings; a downsampling buffer would fold them into a few aggregates
// of these readings, all stamped within minutes, and never fill). Then it
// drops the files' pages from the page cache, so the agent reads them from
// disk as after a reboot, and they are charged to the agent's cgroup (the
// kernel charges a cached page to the cgroup that brought it in).
func fillBuffer(tb testing.TB, path string) buffer.Stats {
	tb.Helper()
	buf, err := buffer.Open(path, buffer.Options{WhenFull: buffer.Drop})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if err := buf.Close(); err != nil {
			tb.Fatal(err)
		}
		for _, p := range []string{path, path + ".wal"} {
			if err := testkit.DropPageCache(p); err != nil {
				tb.Fatal(err)
			}
		}
	}()
	ctx := context.Background()
	rs := make([]*reading.Reading, 2000)
	for {
		for i := range rs {
			rs[i] = &reading.Reading{DeviceID: benchDevice, Sensor: "backlog", Kind: "sim", TS: time.Now().UTC(), TimeSynced: true,
				Values: map[string]float64{reading.Temperature: 20.5, reading.Humidity: 48.25, reading.Pressure: 1008.5}}
		}
		if err := buf.Append(ctx, rs...); err != nil {
			tb.Fatal(err)
		}
		st, err := buf.Stats()
		if err != nil {
			tb.Fatal(err)
		}
		if st.DroppedBytes > 0 {
			return st
		}
	}
}

// memoryMax is the edge-agent unit's MemoryMax= (systemd/edge-agent.service).
const memoryMax = 64 << 20

// fullDrain is what drainFullBuffer measured.
type fullDrain struct {
	filled    buffer.Stats
	took      time.Duration
	deleted   float64 // readings deleted from the buffer (edge_agent_delivered_total)
	confirmed float64 // readings the agent saw confirmed (edge_agent_confirmed_total)
	cgroup    testkit.Usage
	agent     testkit.Memory
	version   int
}

// drainFullBuffer starts the real binary, delivery: kafka, on a full 256 MiB
// buffer inside a memory cgroup limited to the unit's MemoryMax, with the
// broker delay away, and waits until the buffer is drained (below
// caughtUp: 4 sim sensors keep adding). It fails if the agent died or the
// cgroup's OOM killer ran, or if fewer readings were confirmed than were
// waiting; it skips, saying why, without a writable memory cgroup.
func drainFullBuffer(tb testing.TB, l *benchLink, delay time.Duration) fullDrain {
	tb.Helper()
	cg := testkit.NewMemoryCgroup(tb, memoryMax)
	db := filepath.Join(tb.TempDir(), "buffer.db")
	r := fullDrain{filled: fillBuffer(tb, db), version: cg.Version}
	l.proxy.SetMode(tcpproxy.Pass)
	l.proxy.SetDelay(delay/2, delay/20)
	start := time.Now()
	a := startBenchAgent(tb, l, benchRun{db: db, sensors: 4, interval: time.Second, delivery: "kafka", prefix: cg.JoinScript()})
	end := a.waitMetric(tb, "edge_agent_buffer_readings", 10*time.Minute, func(v float64) bool { return v < caughtUp })
	r.took = end.Sub(start)
	r.deleted, r.confirmed = a.metric("edge_agent_delivered_total"), a.metric("edge_agent_confirmed_total")
	a.stop(tb)
	r.agent = a.peak
	var err error
	if r.cgroup, err = cg.Usage(); err != nil {
		tb.Fatal(err)
	}
	if r.cgroup.OOMKills != 0 {
		tb.Fatalf("the OOM killer ran %d times in the cgroup (limit %d MiB); agent peak RssAnon %d KiB",
			r.cgroup.OOMKills, memoryMax>>20, r.agent.RssAnon)
	}
	if waiting := float64(r.filled.Count - caughtUp); r.confirmed < waiting || r.deleted < waiting {
		tb.Fatalf("%.0f readings confirmed and %.0f deleted of the %d waiting", r.confirmed, r.deleted, r.filled.Count)
	}
	tb.Logf("cgroup v%d limit %d MiB, delivery=kafka: %d readings (%d MiB live, file %d MiB) drained in %v (%.0f confirmed and deleted); cgroup peak %d MiB, 0 OOM kills; agent peak RssAnon %d KiB, VmHWM %d KiB",
		r.version, memoryMax>>20, r.filled.Count, r.filled.LiveBytes>>20, r.filled.FileBytes>>20, r.took.Round(time.Second),
		r.deleted, r.cgroup.PeakBytes>>20, r.agent.RssAnon, r.agent.VmHWM)
	return r
}

// TestFullBufferDrainsUnderMemoryMax: the edge-agent unit's MemoryMax=64M
// with a full buffer cannot kill the agent. The real binary, delivery:
// kafka (a reading leaves the Pi only when a forwarder confirms it), starts
// on a full 256 MiB buffer (its default max_bytes) inside a memory cgroup
// limited to 64 MiB, as systemd runs it, and drains it: bbolt maps the
// whole file and the pages it reads count against the limit as page cache,
// which the kernel must reclaim instead of killing the agent, while the
// agent's own memory (the unconfirmed ledger, the in-flight window) stays
// small. It needs root and a writable memory cgroup (v2, or v1's memory
// controller) and skips, saying why, without one; it takes a few minutes
// (256 MiB written, 1.1 million readings drained) and skips under -short.
func TestFullBufferDrainsUnderMemoryMax(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping under -short: fills a 256 MiB buffer and drains it (minutes)")
	}
	drainFullBuffer(t, newBenchLink(t), 0)
}

// BenchmarkFullBufferUnderMemoryMax is TestFullBufferDrainsUnderMemoryMax
// with the broker 20 ms away: it reports the cgroup's peak charge, the
// agent's peak RssAnon and VmHWM, and the drain rate.
func BenchmarkFullBufferUnderMemoryMax(b *testing.B) {
	l := newBenchLink(b)
	for b.Loop() {
		r := drainFullBuffer(b, l, 20*time.Millisecond)
		b.ReportMetric(float64(r.cgroup.PeakBytes)/(1<<20), "cgroup-peak-MiB")
		b.ReportMetric(float64(r.agent.RssAnon)/1024, "RssAnon-MiB")
		b.ReportMetric(float64(r.agent.VmHWM)/1024, "VmHWM-MiB")
		b.ReportMetric(r.deleted/r.took.Seconds(), "readings/s")
	}
}
