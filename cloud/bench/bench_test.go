package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/internal/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

var binPath string

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run()) // no benchmark selected (plain `go test ./...`): skip the build
	}
	dir, err := os.MkdirTemp("", "cloud-forwarder-bench")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "cloud-forwarder")
	build := exec.Command("go", "build", "-trimpath", "-o", binPath, "../cmd/cloud-forwarder")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startMosquitto runs mosquitto with a queue big enough for the backlog;
// extra holds more config lines (BENCH_MOSQUITTO_CONF).
func startMosquitto(tb testing.TB, extra string) string {
	tb.Helper()
	lines := []string{"max_queued_messages 200000", "set_tcp_nodelay true"}
	for _, l := range strings.Split(extra, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return broker.StartMosquitto(tb, broker.MosquittoConfig{Extra: lines}).Addr
}

type child struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func startForwarder(tb testing.TB, mqttAddr, kafkaAddr string, extra ...string) *child {
	tb.Helper()
	c := &child{addr: freeAddr(tb), done: make(chan struct{})}
	c.cmd = exec.Command(binPath, "run")
	c.cmd.Env = append([]string{
		"HIVEMQ_URL=tcp://" + mqttAddr,
		"CONFLUENT_BOOTSTRAP_SERVER_SASL=" + kafkaAddr,
		"KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
		"FORWARDER_ID=bench-fwd",
		"FORWARDER_LISTEN=" + c.addr,
		"FORWARDER_LOG_LEVEL=warn",
	}, extra...)
	c.cmd.Env = append(c.cmd.Env, strings.Fields(os.Getenv("BENCH_FORWARDER_ENV"))...) // e.g. "GOGC=50 KAFKA_BATCH_SIZE=500"
	c.cmd.Stderr = os.Stderr
	if err := c.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	tb.Cleanup(func() { _ = c.cmd.Process.Kill(); <-c.done })
	return c
}

// scrape is a client without gzip, so polling costs the forwarder little.
var scrape = &http.Client{Transport: &http.Transport{DisableCompression: true}}

func (c *child) metric(name string) float64 { return testkit.Metric(c.addr, name) }

func (c *child) waitMetric(tb testing.TB, name string, want float64, timeout time.Duration, poll time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for c.metric(name) < want {
		if time.Now().After(deadline) {
			tb.Fatalf("%s = %v, want %v", name, c.metric(name), want)
		}
		time.Sleep(poll)
	}
}

// peakRSS reads the process's resident high-water mark (VmHWM) in KiB. The
// child's getrusage ru_maxrss is no good here: Go starts children with
// CLONE_VM, so it can report the parent's RSS from before exec.
func (c *child) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

func (c *child) stop(tb testing.TB) *syscall.Rusage {
	tb.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		tb.Fatal("forwarder did not stop")
	}
	return c.cmd.ProcessState.SysUsage().(*syscall.Rusage)
}

// publisher publishes QoS 1 readings as fast as the broker acks them.
func publisher(tb testing.TB, addr, id string) mqtt.Client {
	tb.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).SetAutoReconnect(false)
	c := mqtt.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		tb.Fatalf("publisher: %v", t.Error())
	}
	tb.Cleanup(func() { c.Disconnect(100) })
	return c
}

const devices = 100

func payload(i int) (string, []byte) {
	dev := "pi-" + strconv.Itoa(i%devices)
	return testkit.ReadingTopic(dev), reading.Encode(nil, testkit.Reading(dev, uint64(i/devices+1)))
}

// BenchmarkDrainBacklog: 100,000 readings wait in the forwarder's persistent
// session; the timer covers the forwarder process from start until every
// message is acked on MQTT (so every record is acked by Kafka).
func BenchmarkDrainBacklog(b *testing.B) {
	const n = 100_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		mq := startMosquitto(b, os.Getenv("BENCH_MOSQUITTO_CONF")) // e.g. "max_inflight_messages 20"
		k := testkit.StartKafkaWith(b, nil, testkit.KafkaOptions{Plaintext: true})
		// Create the persistent session, then leave.
		c := startForwarder(b, mq, k.Addr)
		c.waitMetric(b, "forwarder_mqtt_connected", 1, 10*time.Second, 10*time.Millisecond)
		time.Sleep(100 * time.Millisecond) // SUBSCRIBE acked
		c.stop(b)

		pub := publisher(b, mq, "bench-pub")
		toks := make([]mqtt.Token, 0, n)
		for j := 0; j < n; j++ {
			topic, p := payload(j)
			toks = append(toks, pub.Publish(topic, 1, false, p))
		}
		for _, t := range toks {
			if !t.WaitTimeout(60*time.Second) || t.Error() != nil {
				b.Fatalf("publish: %v", t.Error())
			}
		}
		time.Sleep(200 * time.Millisecond)

		b.StartTimer()
		start := time.Now()
		c = startForwarder(b, mq, k.Addr, "FORWARDER_PPROF=true")
		if prof := os.Getenv("BENCH_CPUPROFILE"); prof != "" {
			go saveProfile(c.addr, "profile?seconds=2", prof)
		}
		if os.Getenv("BENCH_DUMP") != "" {
			go func() {
				for range 40 {
					time.Sleep(50 * time.Millisecond)
					resp, err := scrape.Get("http://" + c.addr + "/metrics")
					if err != nil {
						continue
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					for _, l := range strings.Split(string(body), "\n") {
						for _, p := range []string{"go_memstats_heap_sys", "process_resident", "forwarder_in_flight", "forwarder_acked_total"} {
							if strings.HasPrefix(l, p) {
								fmt.Print(l, "  ")
							}
						}
					}
					fmt.Println()
				}
			}()
		}
		if prof := os.Getenv("BENCH_HEAPPROFILE"); prof != "" {
			go func() { time.Sleep(800 * time.Millisecond); saveProfile(c.addr, "heap", prof) }()
		}
		c.waitMetric(b, "forwarder_acked_total", n, 120*time.Second, 20*time.Millisecond)
		elapsed := time.Since(start)
		b.StopTimer()
		hwm := c.peakRSS()
		ru := c.stop(b)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/msg")
		b.ReportMetric(float64(hwm)/1024, "peak-rss-MiB")
		b.Logf("drained %d in %v, cpu %v, VmHWM %d KiB", n, elapsed.Round(time.Millisecond), cpu, hwm)
		b.StartTimer()
	}
}

// saveProfile writes a 2 s CPU profile of the forwarder to path (BENCH_CPUPROFILE).
func saveProfile(addr, what, path string) {
	for range 100 {
		resp, err := http.Get("http://" + addr + "/debug/pprof/" + what)
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		_ = os.WriteFile(path, b, 0o644)
		return
	}
}

// BenchmarkLiveLatency publishes 1,000 readings/s for 10 s to a running
// forwarder and measures, per reading, MQTT publish to Kafka fetch.
func BenchmarkLiveLatency(b *testing.B) {
	const rate, seconds = 1000, 10
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		mq := startMosquitto(b, "")
		k := testkit.StartKafkaWith(b, nil, testkit.KafkaOptions{Plaintext: true})
		c := startForwarder(b, mq, k.Addr, "FORWARDER_PPROF=true")
		c.waitMetric(b, "forwarder_kafka_ready", 1, 10*time.Second, 10*time.Millisecond)
		if prof := os.Getenv("BENCH_CPUPROFILE"); prof != "" {
			go func() { time.Sleep(2 * time.Second); saveProfile(c.addr, "profile?seconds=5", prof) }()
		}
		time.Sleep(200 * time.Millisecond)

		cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.ConsumeTopics(testkit.Topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(50*time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		var (
			mu   sync.Mutex
			sent = map[string]time.Time{}
			lats []time.Duration
		)
		ctx, cancel := context.WithCancel(context.Background())
		consumed := make(chan struct{})
		go func() {
			defer close(consumed)
			for ctx.Err() == nil {
				fs := cl.PollFetches(ctx)
				now := time.Now()
				mu.Lock()
				fs.EachRecord(func(r *kgo.Record) {
					for _, h := range r.Headers {
						if h.Key == "seq" {
							key := string(r.Key) + "/" + string(h.Value)
							if t, ok := sent[key]; ok {
								lats = append(lats, now.Sub(t))
							}
						}
					}
				})
				mu.Unlock()
			}
		}()
		// Make sure the consumer has its partitions before publishing.
		time.Sleep(time.Second)
		pub := publisher(b, mq, "bench-live")
		b.StartTimer()
		tick := time.NewTicker(10 * time.Millisecond)
		j := 0
		for range seconds * 100 {
			<-tick.C
			for range rate / 100 {
				topic, p := payload(j)
				dev := "pi-" + strconv.Itoa(j%devices)
				mu.Lock()
				sent[dev+"/"+strconv.Itoa(j/devices+1)] = time.Now()
				mu.Unlock()
				pub.Publish(topic, 1, false, p)
				j++
			}
		}
		tick.Stop()
		b.StopTimer()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := len(lats)
			mu.Unlock()
			if got >= j || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		cl.Close()
		<-consumed
		hwm := c.peakRSS()
		ru := c.stop(b)
		if len(lats) < j {
			b.Fatalf("only %d of %d readings arrived", len(lats), j)
		}
		slices.Sort(lats)
		p := func(q float64) time.Duration { return lats[int(q*float64(len(lats)-1))] }
		b.ReportMetric(float64(p(0.50).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(p(1).Microseconds())/1000, "max-ms")
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		b.Logf("%d readings at %d/s: p50 %v p99 %v max %v; forwarder cpu %v, VmHWM %d KiB",
			len(lats), rate, p(0.5), p(0.99), p(1), cpu, hwm)
		b.StartTimer()
	}
}

// BenchmarkDecode measures reading.Decode on a typical payload: the part of
// the forwarder's per-message CPU spent validating the wire format.
func BenchmarkDecode(b *testing.B) {
	_, p := payload(12345)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := reading.Decode(p); err != nil {
			b.Fatal(err)
		}
	}
}
