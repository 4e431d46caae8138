package daemon_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// BenchmarkSteadyState runs the real binary with 4 sim sensors at 1 Hz,
// publishing to a local broker with a forwarder's confirmations (delivery:
// kafka), and reports its resident memory (VmRSS,
// VmHWM) and CPU use (utime+stime from /proc/PID/stat) over
// EDGE_AGENT_STEADY_SECONDS (default 60). Run with -benchtime=1x under
// flock /tmp/bench.lock.
func BenchmarkSteadyState(b *testing.B) {
	secs := 60
	if s, err := strconv.Atoi(os.Getenv("EDGE_AGENT_STEADY_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	br := broker.New(b, broker.Options{})
	cnt := broker.NewCounter()
	broker.Subscribe(b, cnt, broker.SubOptions{URL: br.URL()})
	// A forwarder confirming once a second, as FORWARDER_CONFIRM_INTERVAL does.
	broker.NewConfirmer(b, br.URL()).Auto(b, cnt, "pi-steady", time.Second)
	for b.Loop() {
		dir := b.TempDir()
		cfg := filepath.Join(dir, "config.yaml")
		y := fmt.Sprintf(`device_id: pi-steady
buffer: {path: %s}
mqtt: {url: %q, delivery: kafka}
clock: {hold_unsynced: 0s}  # the host's clock may never report synced
status_listen: 127.0.0.1:0
log_format: json
sensors:
  - {name: sim-1, driver: sim, interval: 1s}
  - {name: sim-2, driver: sim, interval: 1s}
  - {name: sim-3, driver: sim, interval: 1s}
  - {name: sim-4, driver: sim, interval: 1s}
`, filepath.Join(dir, "buffer.db"), br.URL())
		if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(agentBin, "run", "--config", cfg)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		pid := cmd.Process.Pid
		time.Sleep(5 * time.Second) // start-up (buffer open, TLS-less connect) is not steady state
		t0, c0 := time.Now(), cpuTicks(b, pid)
		time.Sleep(time.Duration(secs) * time.Second)
		el, c1 := time.Since(t0), cpuTicks(b, pid)
		rss, hwm := memKiB(b, pid, "VmRSS:"), memKiB(b, pid, "VmHWM:")
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("agent: %v\n%s", err, stderr.String())
		}
		const hz = 100 // USER_HZ on Linux
		cpu := float64(c1-c0) / hz / el.Seconds() * 100
		b.ReportMetric(float64(rss)/1024, "RSS_MiB")
		b.ReportMetric(float64(hwm)/1024, "peakRSS_MiB")
		b.ReportMetric(cpu, "CPU_%")
		b.ReportMetric(float64(cnt.Unique("pi-steady")), "delivered")
	}
}

func cpuTicks(b *testing.B, pid int) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the ")" that ends the command name: state is field 3,
	// utime 14 and stime 15 (1-based), so indexes 11 and 12 here.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func memKiB(b *testing.B, pid int, key string) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}
