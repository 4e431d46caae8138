package testkit

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuffer collects output written from many goroutines (a logger, a
// child process) and reads it back safely. The zero value is ready.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logger returns a debug-level text logger writing to l.
func (l *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Build compiles the main packages pkgs (import paths, or paths relative
// to the current directory) into dir the way `make build` ships them:
// static (CGO_ENABLED=0), -trimpath, stripped. It returns the binaries'
// paths in the order of pkgs.
func Build(dir string, pkgs ...string) ([]string, error) {
	args := []string{"build", "-trimpath", "-ldflags", "-s -w", "-o", dir + string(filepath.Separator)}
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	bins := make([]string, len(pkgs))
	for i, p := range pkgs {
		bins[i] = filepath.Join(dir, filepath.Base(p))
	}
	return bins, nil
}

// BuildT is Build into a fresh temporary directory of tb.
func BuildT(tb testing.TB, pkgs ...string) []string {
	tb.Helper()
	bins, err := Build(tb.TempDir(), pkgs...)
	if err != nil {
		tb.Fatal(err)
	}
	return bins
}

// Main is a TestMain that builds the main package pkg once for the whole
// test binary, stores its path in *bin, runs the tests, removes the build
// and exits with the tests' status:
//
//	var bin string
//	func TestMain(m *testing.M) { testkit.Main(m, &bin, "github.com/edgepipe/sensorpipe/agent/cmd/edge-agent") }
func Main(m *testing.M, bin *string, pkg string) {
	dir, err := os.MkdirTemp("", filepath.Base(pkg)+"-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins, err := Build(dir, pkg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	*bin = bins[0]
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// WaitFor polls cond every 20 ms until it holds, and fails tb naming what
// it waited for if timeout passes first.
func WaitFor(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timeout after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NeedTool returns the path of the program name. When it is missing the
// test is skipped, saying which Debian package provides it, or, under
// CI=true (where .ci/run installs it), it fails.
func NeedTool(tb testing.TB, name, debianPkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s not installed, and CI requires it (apt-get install %s; see .ci/run)", name, debianPkg)
	}
	tb.Skipf("skipping: %s not installed (apt-get install %s)", name, debianPkg)
	return ""
}

// FreeAddr returns a 127.0.0.1 host:port that was free a moment ago, for a
// server that must be told its address before it starts (or restart on it).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := PickAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// PickAddr is FreeAddr for programs: it returns the error. The port comes
// from below the kernel's ephemeral range, so a program restarted on it
// (the e2e harness kills and restarts forwarders) cannot find it taken by
// some other process's outgoing connection, which draws its local port from
// that range; a port from 127.0.0.1:0 could be.
func PickAddr() (string, error) {
	lo := ephemeralLow()
	for range 100 {
		port := 10000 + rand.IntN(lo-10000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken; try another
		}
		addr := l.Addr().String()
		l.Close()
		return addr, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default 32768 elsewhere).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > 11000 {
				return lo
			}
		}
	}
	return 32768
}

// scrape is a client without gzip, so polling costs the scraped program
// little (the benchmarks measure its CPU while they poll).
var scrape = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// Metric reads one unlabelled sample from the Prometheus endpoint at
// http://addr/metrics; -1 if the endpoint or the sample is not there.
func Metric(addr, name string) float64 {
	v, err := Metrics(addr, name)
	if err != nil {
		return -1
	}
	return v[name]
}

// Metrics reads several unlabelled samples from one scrape of
// http://addr/metrics, so they describe the same moment; a sample the page
// does not have is -1. An error means the endpoint did not answer.
func Metrics(addr string, names ...string) (map[string]float64, error) {
	resp, err := scrape.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape http://%s/metrics: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET http://%s/metrics: %s", addr, resp.Status)
	}
	out := make(map[string]float64, len(names))
	for _, n := range names {
		out[n] = -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(l, " ")
		if _, want := out[name]; !ok || !want {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	return out, nil
}

// BenchRTTs are the round trips the distance benchmarks run at: BENCH_RTTS,
// in milliseconds separated by spaces, default "0 20 50".
func BenchRTTs(tb testing.TB) []time.Duration {
	tb.Helper()
	spec := os.Getenv("BENCH_RTTS")
	if spec == "" {
		spec = "0 20 50"
	}
	var out []time.Duration
	for _, f := range strings.Fields(spec) {
		ms, err := strconv.Atoi(f)
		if err != nil || ms < 0 {
			tb.Fatalf("BENCH_RTTS: %q is not a number of milliseconds", f)
		}
		out = append(out, time.Duration(ms)*time.Millisecond)
	}
	return out
}
