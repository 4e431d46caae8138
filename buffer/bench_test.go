package buffer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Run the figures in docs/BUFFER.md with:
//
//	flock /tmp/bench.lock go test -run '^$' -bench . -benchtime 3s ./buffer/
//
// Every append below is durable (fsynced) when it returns.

// BenchmarkAppendParallel: many goroutines append one reading each, as
// sensors polled concurrently do; group commit shares the fsyncs.
func BenchmarkAppendParallel(b *testing.B) {
	for _, par := range []int{8, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", par*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			buf, err := buffer.Open(filepath.Join(b.TempDir(), "buffer.db"), buffer.Options{MaxBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer buf.Close()
			var i atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := buf.Append(ctx, newReading(int(i.Add(1)))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
		})
	}
}

// BenchmarkAppendLatency: one durable Append at a time, against a bare
// write+fsync of a small file measured in the same run on the same disk.
func BenchmarkAppendLatency(b *testing.B) {
	dir := b.TempDir()
	buf, err := buffer.Open(filepath.Join(dir, "buffer.db"), buffer.Options{MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	ctx := context.Background()
	payload := reading.Encode(nil, &reading.Reading{DeviceID: "pi-test-1", Seq: 1, Sensor: "sim-0", Kind: "sim",
		TS: t0, TimeSynced: true, Values: map[string]float64{reading.Temperature: 21.5}})

	// Warm both up so file growth is not in the figures.
	for i := 0; i < 200; i++ {
		_ = buf.Append(ctx, newReading(i))
	}
	f, err := os.Create(filepath.Join(dir, "bare"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	bare := func(n int) time.Duration {
		start := time.Now()
		for i := 0; i < n; i++ {
			if _, err := f.WriteAt(payload, 0); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	bare(200)

	b.ResetTimer()
	var tAppend, tBare time.Duration
	// Alternate one append and one bare write+fsync, so both see the same
	// disk conditions (a shared disk's latency drifts a lot within seconds).
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := buf.Append(ctx, newReading(i)); err != nil {
			b.Fatal(err)
		}
		tAppend += time.Since(start)
		tBare += bare(1)
	}
	b.StopTimer()
	appendNs := float64(tAppend.Nanoseconds()) / float64(b.N)
	bareNs := float64(tBare.Nanoseconds()) / float64(b.N)
	b.ReportMetric(appendNs, "append-ns")
	b.ReportMetric(bareNs, "write+fsync-ns")
	b.ReportMetric(appendNs/bareNs, "ratio")
	b.ReportMetric(0, "ns/op") // the op is a pair; the two metrics above are the figures
}

// BenchmarkDrain: what the publisher does after PUBACKs, Peek a window and
// Delete it, over a full buffer.
func BenchmarkDrain(b *testing.B) {
	buf, err := buffer.Open(filepath.Join(b.TempDir(), "buffer.db"), buffer.Options{MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	ctx := context.Background()
	for done := 0; done < b.N; {
		n := min(5000, b.N-done)
		rs := make([]*reading.Reading, n)
		for i := range rs {
			rs[i] = newReading(done + i)
		}
		if err := buf.Append(ctx, rs...); err != nil {
			b.Fatal(err)
		}
		done += n
	}
	b.ResetTimer()
	drained := 0
	for {
		recs, err := buf.Peek(0, 1000)
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		if err := buf.Delete(ctx, seqs...); err != nil {
			b.Fatal(err)
		}
		drained += len(recs)
	}
	b.StopTimer()
	if drained != b.N {
		b.Fatalf("drained %d of %d", drained, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

const millionEnv = "BUFFER_BENCH_MILLION"

// BenchmarkMillion builds a buffer of 1,000,000 readings, then measures, in
// a fresh child process (so the builder's memory is not counted), how long
// Open and Stats take and the process's peak memory while it also peeks,
// appends and deletes like the running agent.
func BenchmarkMillion(b *testing.B) {
	const n = 1_000_000
	path := filepath.Join(b.TempDir(), "buffer.db")
	buf, err := buffer.Open(path, buffer.Options{MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for done := 0; done < n; {
		rs := make([]*reading.Reading, min(10000, n-done))
		for i := range rs {
			rs[i] = newReading(done + i)
		}
		if err := buf.Append(ctx, rs...); err != nil {
			b.Fatal(err)
		}
		done += len(rs)
	}
	if err := buf.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var res millionResult
	for i := 0; i < b.N; i++ {
		cmd := childCommand(b, "", path)
		cmd.Env = append(os.Environ(), millionEnv+"="+path)
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("child: %v", err)
		}
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("child said %q: %v", out, err)
		}
	}
	b.StopTimer()
	if res.Count != n {
		b.Fatalf("child saw %d readings", res.Count)
	}
	b.ReportMetric(res.OpenMs, "open-ms")
	b.ReportMetric(res.StatsMs, "stats-ms")
	b.ReportMetric(res.VmHWMKiB/1024, "VmHWM-MiB")
	b.ReportMetric(res.RssAnonKiB/1024, "RssAnon-MiB")
	b.ReportMetric(res.GoHeapMiB, "go-heap-MiB")
	b.ReportMetric(float64(res.FileBytes)/(1<<20), "file-MiB")
	b.ReportMetric(0, "ns/op")
}

type millionResult struct {
	Count      uint64  `json:"count"`
	OpenMs     float64 `json:"open_ms"`
	StatsMs    float64 `json:"stats_ms"`
	VmHWMKiB   float64 `json:"vmhwm_kib"`
	RssAnonKiB float64 `json:"rss_anon_kib"`
	GoHeapMiB  float64 `json:"go_heap_mib"`
	FileBytes  int64   `json:"file_bytes"`
}

// millionChild is the child side of BenchmarkMillion.
func millionChild(path string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	start := time.Now()
	b, err := buffer.Open(path, buffer.Options{MaxBytes: 1 << 30})
	if err != nil {
		return fail(err)
	}
	defer b.Close()
	var res millionResult
	res.OpenMs = float64(time.Since(start).Microseconds()) / 1000
	start = time.Now()
	const rounds = 20
	var st buffer.Stats
	for i := 0; i < rounds; i++ {
		if st, err = b.Stats(); err != nil {
			return fail(err)
		}
	}
	res.StatsMs = float64(time.Since(start).Microseconds()) / 1000 / rounds
	res.Count, res.FileBytes = st.Count, st.FileBytes
	// Work like the agent: drain a window, append a few.
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		recs, err := b.Peek(0, 500)
		if err != nil {
			return fail(err)
		}
		seqs := make([]uint64, len(recs))
		for j, r := range recs {
			seqs[j] = r.Seq
		}
		if err := b.Delete(ctx, seqs...); err != nil {
			return fail(err)
		}
		rs := make([]*reading.Reading, 500)
		for j := range rs {
			rs[j] = newReading(j)
		}
		if err := b.Append(ctx, rs...); err != nil {
			return fail(err)
		}
	}
	res.VmHWMKiB, res.RssAnonKiB = procStatus("VmHWM"), procStatus("RssAnon")
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	res.GoHeapMiB = float64(s[0].Value.Uint64()) / (1 << 20)
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// procStatus reads one "Key: N kB" line of /proc/self/status.
func procStatus(key string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			v, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v
		}
	}
	return -1
}
