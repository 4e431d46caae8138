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
// can refuse the agent or put the broker at a distance.
type benchLink struct {
	ca    *pki.PKI
	proxy *tcpproxy.Proxy
}

const (
	benchDevice = "pi-backlog"
	benchPass   = "backlog-pw"
)

func newBenchLink(b *testing.B) *benchLink {
	b.Helper()
	ca := pki.New(b)
	mq := broker.StartMosquitto(b, broker.MosquittoConfig{PKI: ca, Users: map[string]string{benchDevice: benchPass}})
	p, err := tcpproxy.Listen("127.0.0.1:0", mq.Addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return &benchLink{ca: ca, proxy: p}
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

// startBenchAgent writes a config for sensors sim sensors polling every
// interval, buffering in db and publishing through l, and starts the binary.
// It runs with delivery: broker (a reading leaves the buffer at its PUBACK):
// there is no forwarder here to confirm, and the drain measured is the
// agent's own; with delivery: kafka the forwarder's confirmations pace it
// (mqttpub's BenchmarkDrain100k measures that mode).
func startBenchAgent(b *testing.B, l *benchLink, db string, sensors int, interval time.Duration) *benchAgent {
	b.Helper()
	return startBenchAgentIn(b, l, db, sensors, interval, "")
}

// startBenchAgentIn is startBenchAgent with the binary started by sh after
// prefix (testkit.MemoryCgroup's JoinScript puts it in a cgroup first).
func startBenchAgentIn(b *testing.B, l *benchLink, db string, sensors int, interval time.Duration, prefix string) *benchAgent {
	b.Helper()
	dir := b.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(benchPass+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	a := &benchAgent{status: testkit.FreeAddr(b), done: make(chan struct{})}
	var sb strings.Builder
	fmt.Fprintf(&sb, `device_id: %s
buffer: {path: %s}
mqtt: {url: "ssl://%s", username: %s, password_file: %s, ca_file: %s, delivery: broker}
clock: {hold_unsynced: 0s}  # the host's clock may never report synced
status_listen: %s
log_format: json
log_level: warn
sensors:
`, benchDevice, db, l.proxy.Addr(), benchDevice, pw, l.ca.CAFile, a.status)
	for i := range sensors {
		fmt.Fprintf(&sb, "  - {name: sim-%d, driver: sim, interval: %v}\n", i, interval)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	a.cmd = exec.Command(agentBin, "run", "--config", cfg)
	if prefix != "" {
		a.cmd = exec.Command("sh", "-c", prefix+`exec "$0" "$@"`, agentBin, "run", "--config", cfg)
	}
	a.cmd.Env = append(os.Environ(), strings.Fields(os.Getenv("BENCH_AGENT_ENV"))...) // e.g. "GOGC=50"
	a.cmd.Stderr = &a.stderr
	if err := a.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	b.Cleanup(func() { _ = a.cmd.Process.Kill(); <-a.done })
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

// waitMetric polls series until cond holds; it returns when it did.
func (a *benchAgent) waitMetric(b *testing.B, series string, timeout time.Duration, cond func(float64) bool) time.Time {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := a.metric(series)
		if v >= 0 && cond(v) {
			return time.Now()
		}
		select {
		case <-a.done:
			b.Fatalf("edge-agent exited: %s", a.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s = %v after %v", series, v, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process (SIGTERM) and the sampling.
func (a *benchAgent) stop(b *testing.B) {
	b.Helper()
	a.peak = a.mem.Stop()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		b.Fatalf("edge-agent did not stop: %s", a.stderr.String())
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
//   - build_and_drain: one process, 32 sim sensors every 10 ms (3,200
//     readings/s), link refused until the buffer holds 100,000 readings,
//     then open (no delay). The reconnect backoff is not timed: readings/s
//     runs from the first publish after the link opened until the buffer is
//     below 1,000. RssAnon-MiB is the peak of RssAnon sampled every 20 ms
//     over the process's whole life, VmHWM-MiB its peak resident set
//     (counting bbolt's mapped file).
//   - drain/broker_rtt=X: a fresh process on a prefilled 100,000 backlog,
//     4 sim sensors at 1 Hz, the broker X away (BENCH_RTTS); readings/s from
//     process start until the buffer is below 1,000.
func BenchmarkBacklog(b *testing.B) {
	l := newBenchLink(b)
	b.Run("build_and_drain", func(b *testing.B) {
		for b.Loop() {
			l.proxy.SetDelay(0, 0)
			l.proxy.SetMode(tcpproxy.Refuse)
			a := startBenchAgent(b, l, filepath.Join(b.TempDir(), "buffer.db"), 32, 10*time.Millisecond)
			a.waitMetric(b, "edge_agent_buffer_readings", 120*time.Second, func(v float64) bool { return v >= backlogN })
			l.proxy.SetMode(tcpproxy.Pass)
			a.waitMetric(b, "edge_agent_published_total", 60*time.Second, func(v float64) bool { return v > 0 })
			start := time.Now()
			p0 := a.metric("edge_agent_published_total")
			end := a.waitMetric(b, "edge_agent_buffer_readings", 120*time.Second, func(v float64) bool { return v < caughtUp })
			p1 := a.metric("edge_agent_published_total")
			a.stop(b)
			b.ReportMetric((p1-p0)/end.Sub(start).Seconds(), "readings/s")
			b.ReportMetric(float64(a.peak.RssAnon)/1024, "RssAnon-MiB")
			b.ReportMetric(float64(a.peak.VmHWM)/1024, "VmHWM-MiB")
			b.Logf("built %d, drained %.0f readings in %v; peak RssAnon %d KiB, VmHWM %d KiB",
				backlogN, p1-p0, end.Sub(start).Round(time.Millisecond), a.peak.RssAnon, a.peak.VmHWM)
		}
	})
	for _, rtt := range testkit.BenchRTTs(b) {
		b.Run(fmt.Sprintf("drain/broker_rtt=%dms", rtt.Milliseconds()), func(b *testing.B) {
			for b.Loop() {
				db := filepath.Join(b.TempDir(), "buffer.db")
				prefill(b, db, benchDevice, backlogN)
				l.proxy.SetMode(tcpproxy.Pass)
				l.proxy.SetDelay(rtt/2, rtt/20)
				start := time.Now()
				a := startBenchAgent(b, l, db, 4, time.Second)
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

// fillBuffer appends readings to the buffer at path until it holds its
// max_bytes (256 MiB, the default) and starts dropping the oldest. Then it
// drops the files' pages from the page cache, so the agent reads them from
// disk as after a reboot, and they are charged to the agent's cgroup (the
// kernel charges a cached page to the cgroup that brought it in).
func fillBuffer(b *testing.B, path string) buffer.Stats {
	b.Helper()
	buf, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := buf.Close(); err != nil {
			b.Fatal(err)
		}
		for _, p := range []string{path, path + ".wal"} {
			if err := testkit.DropPageCache(p); err != nil {
				b.Fatal(err)
			}
		}
	}()
	ctx := context.Background()
	for {
		rs := make([]*reading.Reading, 2000)
		for i := range rs {
			rs[i] = &reading.Reading{DeviceID: benchDevice, Sensor: "backlog", Kind: "sim", TS: time.Now().UTC(), TimeSynced: true,
				Values: map[string]float64{reading.Temperature: 20.5, reading.Humidity: 48.25, reading.Pressure: 1008.5}}
		}
		if err := buf.Append(ctx, rs...); err != nil {
			b.Fatal(err)
		}
		st, err := buf.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if st.DroppedBytes > 0 {
			return st
		}
	}
}

// BenchmarkFullBufferUnderMemoryMax is the edge-agent unit's MemoryMax=64M
// with a full buffer: the real binary starts on a 256 MiB buffer (its
// default max_bytes, full) inside a memory cgroup limited to 64 MiB, as
// systemd would run it, and drains it to the broker 20 ms away. bbolt maps
// the whole file, and the pages it reads count against the limit as page
// cache; the kernel must reclaim those instead of killing the agent. It
// fails if the cgroup's OOM killer ran or the agent died; it reports the
// cgroup's peak charge, the agent's peak RssAnon and VmHWM, and the drain
// rate. It needs root and a writable memory cgroup (v2, or v1's memory
// controller); it skips, saying why, otherwise.
func BenchmarkFullBufferUnderMemoryMax(b *testing.B) {
	const limit = 64 << 20
	l := newBenchLink(b)
	for b.Loop() {
		cg := testkit.NewMemoryCgroup(b, limit)
		db := filepath.Join(b.TempDir(), "buffer.db")
		st := fillBuffer(b, db)
		l.proxy.SetMode(tcpproxy.Pass)
		l.proxy.SetDelay(10*time.Millisecond, time.Millisecond)
		start := time.Now()
		a := startBenchAgentIn(b, l, db, 4, time.Second, cg.JoinScript())
		end := a.waitMetric(b, "edge_agent_buffer_readings", 10*time.Minute, func(v float64) bool { return v < caughtUp })
		published := a.metric("edge_agent_published_total")
		a.stop(b)
		u, err := cg.Usage()
		if err != nil {
			b.Fatal(err)
		}
		if u.OOMKills != 0 {
			b.Fatalf("the OOM killer ran %d times in the cgroup (limit %d MiB)", u.OOMKills, limit>>20)
		}
		b.ReportMetric(float64(u.PeakBytes)/(1<<20), "cgroup-peak-MiB")
		b.ReportMetric(float64(a.peak.RssAnon)/1024, "RssAnon-MiB")
		b.ReportMetric(float64(a.peak.VmHWM)/1024, "VmHWM-MiB")
		b.ReportMetric(published/end.Sub(start).Seconds(), "readings/s")
		b.Logf("cgroup v%d limit %d MiB: %d readings (%d MiB live, file %d MiB) drained in %v; cgroup peak %d MiB, 0 OOM kills; agent peak RssAnon %d KiB, VmHWM %d KiB",
			cg.Version, limit>>20, st.Count, st.LiveBytes>>20, st.FileBytes>>20, end.Sub(start).Round(time.Second),
			u.PeakBytes>>20, a.peak.RssAnon, a.peak.VmHWM)
	}
}
