package bench

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

var binPath string

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run()) // no benchmark selected (plain `go test ./...`): skip the build
	}
	if bin := os.Getenv("BENCH_FORWARDER_BIN"); bin != "" { // another build, for an A/B comparison
		binPath = bin
		os.Exit(m.Run())
	}
	testkit.Main(m, &binPath, "github.com/edgepipe/sensorpipe/cloud/cmd/cloud-forwarder") // as make build ships it
}

// distance is a round trip as the proxy makes it: half each way, plus up to
// a tenth of that at random per chunk (jitter; order is kept).
type distance struct{ oneWay, jitter time.Duration }

func atRTT(rtt time.Duration) distance { return distance{rtt / 2, rtt / 20} }

func (d distance) name() string { return fmt.Sprintf("kafka_rtt=%dms", (2 * d.oneWay).Milliseconds()) }

// mosquitto is a broker with a TLS listener and a queue big enough for the backlog.
type mosquitto struct {
	addr  string
	certs *pki.PKI
}

func (m *mosquitto) url() string { return "ssl://" + m.addr }

// startMosquitto runs mosquitto with TLS on a free port; extra holds more
// config lines (BENCH_MOSQUITTO_CONF, e.g. "max_inflight_messages 20").
func startMosquitto(tb testing.TB, certs *pki.PKI, extra string) *mosquitto {
	tb.Helper()
	lines := []string{"max_queued_messages 200000", "set_tcp_nodelay true"}
	for _, l := range strings.Split(extra, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	m := broker.StartMosquitto(tb, broker.MosquittoConfig{PKI: certs, Extra: lines})
	return &mosquitto{addr: m.Addr, certs: certs}
}

type child struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startForwarder runs the binary against mq and k over TLS (and SASL PLAIN
// to Kafka), as in production.
func startForwarder(tb testing.TB, mq *mosquitto, k *kafka.Cluster, extra ...string) *child {
	tb.Helper()
	c := &child{addr: testkit.FreeAddr(tb), done: make(chan struct{})}
	c.cmd = exec.Command(binPath, "run")
	c.cmd.Env = append([]string{
		"HIVEMQ_URL=" + mq.url(),
		"HIVEMQ_CA_FILE=" + mq.certs.CAFile,
		"CONFLUENT_BOOTSTRAP_SERVER_SASL=" + k.Addr,
		"CONFLUENT_API_KEY=" + stack.KafkaUser,
		"CONFLUENT_API_SECRET=" + stack.KafkaSecret,
		"KAFKA_CA_FILE=" + mq.certs.CAFile,
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

// peakRSS reads the process's resident high-water mark (VmHWM) in KiB, -1
// once it has exited. The child's getrusage ru_maxrss is no good here: Go
// starts children with CLONE_VM, so it can report the parent's RSS from
// before exec.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
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
func publisher(tb testing.TB, mq *mosquitto, id string) mqtt.Client {
	tb.Helper()
	o := mqtt.NewClientOptions().AddBroker(mq.url()).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetTLSConfig(mq.certs.Client())
	c := mqtt.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		tb.Fatalf("publisher: %v", t.Error())
	}
	tb.Cleanup(func() { c.Disconnect(100) })
	return c
}

const (
	devices = 100
	backlog = 100_000
	filter  = "sensors/+/+/reading"
)

func payload(i int) (string, []byte) {
	dev := "pi-" + strconv.Itoa(i%devices)
	return stack.ReadingTopic(dev), reading.Encode(nil, stack.Reading(dev, uint64(i/devices+1)))
}

// forwarderBacklog starts mosquitto and Kafka (behind its proxy), creates
// the forwarder's persistent session and leaves it, queues n readings for
// it, then puts Kafka d away.
func forwarderBacklog(b *testing.B, n int, d distance) (*mosquitto, *kafka.Cluster) {
	b.Helper()
	certs := pki.New(b)
	mq := startMosquitto(b, certs, os.Getenv("BENCH_MOSQUITTO_CONF"))
	k := stack.StartKafkaWith(b, certs, stack.KafkaOptions{Proxy: true})
	c := startForwarder(b, mq, k)
	c.waitMetric(b, "forwarder_mqtt_connected", 1, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // SUBSCRIBE acked
	c.stop(b)
	fillBacklog(b, mq, n)
	k.Proxy().SetDelay(d.oneWay, d.jitter)
	return mq, k
}

// fillBacklog publishes n readings for a persistent session that is away.
func fillBacklog(tb testing.TB, mq *mosquitto, n int) {
	tb.Helper()
	pub := publisher(tb, mq, "bench-pub")
	toks := make([]mqtt.Token, 0, n)
	for j := range n {
		topic, p := payload(j)
		toks = append(toks, pub.Publish(topic, 1, false, p))
	}
	for _, t := range toks {
		if !t.WaitTimeout(60*time.Second) || t.Error() != nil {
			tb.Fatalf("publish: %v", t.Error())
		}
	}
	time.Sleep(200 * time.Millisecond)
}

// BenchmarkDrainBacklog: 100,000 readings wait in the forwarder's persistent
// session on a TLS mosquitto; Kafka (kfake, TLS + SASL PLAIN, 6 partitions)
// is one round trip away behind a delaying proxy (BENCH_RTTS). The timer
// covers the forwarder process from start until every message is acked on
// MQTT (so every record is acked by Kafka). It reports msgs/s, CPU µs per
// message (getrusage of the child over its life) and peak RSS (VmHWM).
func BenchmarkDrainBacklog(b *testing.B) {
	for _, rtt := range testkit.BenchRTTs(b) {
		d := atRTT(rtt)
		b.Run(d.name(), func(b *testing.B) { drainBacklog(b, d) })
	}
}

func drainBacklog(b *testing.B, d distance) {
	for b.Loop() {
		b.StopTimer()
		mq, k := forwarderBacklog(b, backlog, d)

		b.StartTimer()
		start := time.Now()
		c := startForwarder(b, mq, k, "FORWARDER_PPROF=true")
		mem := testkit.SampleMemory(c.cmd.Process.Pid, 20*time.Millisecond)
		if prof := os.Getenv("BENCH_CPUPROFILE"); prof != "" {
			go saveProfile(c.addr, "profile?seconds=2", prof)
		}
		if os.Getenv("BENCH_DUMP") != "" {
			go dump(c.addr)
		}
		if prof := os.Getenv("BENCH_HEAPPROFILE"); prof != "" {
			go func() { time.Sleep(800 * time.Millisecond); saveProfile(c.addr, "heap", prof) }()
		}
		c.waitMetric(b, "forwarder_acked_total", backlog, 180*time.Second, 20*time.Millisecond)
		elapsed := time.Since(start)
		b.StopTimer()
		m := mem.Stop()
		ru := c.stop(b)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		b.ReportMetric(float64(backlog)/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(cpu.Microseconds())/backlog, "cpu-µs/msg")
		b.ReportMetric(float64(m.VmHWM)/1024, "peak-rss-MiB")
		b.ReportMetric(float64(m.RssAnon)/1024, "peak-anon-MiB")
		b.ReportMetric(float64(m.RssFile)/1024, "peak-file-MiB")
		b.Logf("drained %d in %v at %v round trip, cpu %v, VmHWM %d KiB (RssAnon peak %d, RssFile peak %d)",
			backlog, elapsed.Round(time.Millisecond), 2*d.oneWay, cpu, m.VmHWM, m.RssAnon, m.RssFile)
		b.StartTimer()
	}
}

// BenchmarkDrainMosquittoSub is the local limit the forwarder's drain is
// held against: mosquitto_sub (libmosquitto, C) takes the same 100,000
// backlog from the same TLS broker at QoS 1 on a persistent session and
// writes it to /dev/null. Nothing goes to Kafka, so no round trip applies.
func BenchmarkDrainMosquittoSub(b *testing.B) {
	if _, err := exec.LookPath("mosquitto_sub"); err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatal("CI=true but mosquitto_sub is not installed")
		}
		b.Skip("mosquitto_sub is not installed (apt-get install mosquitto-clients)")
	}
	for b.Loop() {
		b.StopTimer()
		certs := pki.New(b)
		mq := startMosquitto(b, certs, os.Getenv("BENCH_MOSQUITTO_CONF"))
		host, port, _ := net.SplitHostPort(mq.addr)
		args := []string{"-h", host, "-p", port, "--cafile", certs.CAFile, "-c", "-i", "bench-sub", "-q", "1", "-t", filter}
		// -E: subscribe, then leave (the persistent session stays).
		if out, err := exec.Command("mosquitto_sub", append(args, "-E")...).CombinedOutput(); err != nil {
			b.Fatalf("mosquitto_sub -E: %v: %s", err, out)
		}
		fillBacklog(b, mq, backlog)

		b.StartTimer()
		start := time.Now()
		cmd := exec.Command("mosquitto_sub", append(args, "-C", strconv.Itoa(backlog), "-N")...)
		cmd.Stdout = io.Discard
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		// Sampled, as the process exits at the end (see peakRSS for why not ru_maxrss).
		mem := testkit.SampleMemory(cmd.Process.Pid, 20*time.Millisecond)
		waitErr := make(chan error, 1)
		go func() { waitErr <- cmd.Wait() }()
		var err error
		select {
		case err = <-waitErr:
		case <-time.After(180 * time.Second):
			_ = cmd.Process.Kill()
			err = <-waitErr
		}
		elapsed := time.Since(start)
		b.StopTimer()
		hwm := mem.Stop().VmHWM
		if err != nil {
			b.Fatalf("mosquitto_sub: %v", err)
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		b.ReportMetric(float64(backlog)/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(cpu.Microseconds())/backlog, "cpu-µs/msg")
		b.ReportMetric(float64(hwm)/1024, "peak-rss-MiB")
		b.Logf("mosquitto_sub drained %d in %v, cpu %v, VmHWM %d KiB (sampled)", backlog, elapsed.Round(time.Millisecond), cpu, hwm)
		b.StartTimer()
	}
}

// dump prints RSS, heap and in-flight every 50 ms for 2 s (BENCH_DUMP=1).
func dump(addr string) {
	for range 40 {
		time.Sleep(50 * time.Millisecond)
		resp, err := http.Get("http://" + addr + "/metrics")
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
}

// saveProfile writes a pprof profile of the forwarder to path (BENCH_CPUPROFILE, BENCH_HEAPPROFILE).
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
// forwarder with Kafka one round trip away (BENCH_RTTS) and reports, per
// reading, MQTT publish to the record being fetched from Kafka (p50, p99,
// max; the consumer dials kfake directly, not through the delay) and
// added-p99: the forwarder's added latency (MQTT arrival to Kafka ack)
// bounded from above by that figure plus the ack's way back (one-way delay
// plus the largest jitter). The target is added-p99 < 50 ms + the round trip.
func BenchmarkLiveLatency(b *testing.B) {
	for _, rtt := range testkit.BenchRTTs(b) {
		d := atRTT(rtt)
		b.Run(d.name(), func(b *testing.B) { liveLatency(b, d) })
	}
}

func liveLatency(b *testing.B, d distance) {
	const rate, warmup, seconds = 1000, 2, 10
	for b.Loop() {
		b.StopTimer()
		certs := pki.New(b)
		mq := startMosquitto(b, certs, "")
		k := stack.StartKafkaWith(b, certs, stack.KafkaOptions{Proxy: true})
		k.Proxy().SetDelay(d.oneWay, d.jitter)
		c := startForwarder(b, mq, k, "FORWARDER_PPROF=true")
		c.waitMetric(b, "forwarder_kafka_ready", 1, 20*time.Second, 10*time.Millisecond)
		if prof := os.Getenv("BENCH_CPUPROFILE"); prof != "" {
			go func() { time.Sleep(2 * time.Second); saveProfile(c.addr, "profile?seconds=5", prof) }()
		}
		time.Sleep(200 * time.Millisecond)

		direct := &tls.Dialer{Config: certs.Client()}
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.DirectAddr()), kgo.ConsumeTopics(stack.Topic),
			kgo.SASL(plain.Auth{User: stack.KafkaUser, Pass: stack.KafkaSecret}.AsMechanism()),
			kgo.Dialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
				return direct.DialContext(ctx, network, k.DirectAddr()) // one broker: every address is kfake's
			}),
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
		tick := time.NewTicker(10 * time.Millisecond)
		j, measured := 0, 0
		var warm histogram
		// The first warmup seconds are not measured: a live forwarder has
		// its connections to every partition's leader open already (each
		// costs TCP, TLS and SASL round trips at a distance).
		for i := range (warmup + seconds) * 100 {
			<-tick.C
			if i == warmup*100 {
				warm = c.histogram(latencyHist)
				b.StartTimer()
			}
			for range rate / 100 {
				topic, p := payload(j)
				if i >= warmup*100 {
					dev := "pi-" + strconv.Itoa(j%devices)
					mu.Lock()
					sent[dev+"/"+strconv.Itoa(j/devices+1)] = time.Now()
					mu.Unlock()
					measured++
				}
				pub.Publish(topic, 1, false, p)
				j++
			}
		}
		tick.Stop()
		b.StopTimer()
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			got := len(lats)
			mu.Unlock()
			if got >= measured || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		cl.Close()
		<-consumed
		hwm := peakRSS(c.cmd.Process.Pid)
		fwdHist := c.histogram(latencyHist).minus(warm)
		fwdP99 := quantile(fwdHist, 0.99)
		b.Logf("forwarder histogram after warm-up: %v", fwdHist)
		ru := c.stop(b)
		if len(lats) < measured {
			b.Fatalf("only %d of %d readings arrived", len(lats), measured)
		}
		slices.Sort(lats)
		p := func(q float64) time.Duration { return lats[int(q*float64(len(lats)-1))] }
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		added := p(0.99) + d.oneWay + d.jitter
		b.ReportMetric(ms(p(0.50)), "p50-ms")
		b.ReportMetric(ms(p(0.99)), "p99-ms")
		b.ReportMetric(ms(p(1)), "max-ms")
		b.ReportMetric(ms(added), "added-p99-ms")
		b.ReportMetric(fwdP99*1000, "fwd-hist-p99-ms")
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		b.Logf("%d readings at %d/s, Kafka %v away: p50 %v p99 %v max %v, added p99 <= %v (target < %v); forwarder cpu %v, VmHWM %d KiB",
			len(lats), rate, 2*d.oneWay, p(0.5), p(0.99), p(1), added, 50*time.Millisecond+2*d.oneWay, cpu, hwm)
		b.StartTimer()
	}
}

// latencyHist is the forwarder's MQTT-receive-to-Kafka-ack histogram.
const latencyHist = "forwarder_produce_latency_seconds"

// histogram is a Prometheus histogram's cumulative buckets.
type histogram []struct{ le, n float64 }

// histogram reads the child's histogram name (nil if missing).
func (c *child) histogram(name string) histogram {
	resp, err := http.Get("http://" + c.addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var h histogram
	for _, l := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(l, name+`_bucket{le="`)
		if !ok {
			continue
		}
		le, count, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		n, _ := strconv.ParseFloat(count, 64)
		bound := math.Inf(1)
		if le != "+Inf" {
			if bound, err = strconv.ParseFloat(le, 64); err != nil {
				continue
			}
		}
		h = append(h, struct{ le, n float64 }{bound, n})
	}
	return h
}

// minus is h with the counts of an earlier reading of it taken away.
func (h histogram) minus(earlier histogram) histogram {
	if len(earlier) != len(h) {
		return h
	}
	out := slices.Clone(h)
	for i := range out {
		out[i].n -= earlier[i].n
	}
	return out
}

// quantile estimates quantile q of h, interpolating linearly inside the
// bucket it falls in (as PromQL's histogram_quantile does); -1 if empty.
func quantile(h histogram, q float64) float64 {
	if len(h) == 0 || h[len(h)-1].n == 0 {
		return -1
	}
	rank := q * h[len(h)-1].n
	lo, below := 0.0, 0.0
	for _, bk := range h {
		if bk.n >= rank {
			if math.IsInf(bk.le, 1) {
				return lo
			}
			return lo + (bk.le-lo)*(rank-below)/(bk.n-below)
		}
		lo, below = bk.le, bk.n
	}
	return lo
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

// BenchmarkKillMidDrain measures what a crash costs in duplicates: 20,000
// readings wait in the forwarder's persistent session, the forwarder is
// SIGKILLed once half of them are acked on MQTT, and a new one (same id)
// drains the rest. It reports the records Kafka holds beyond the 20,000
// readings (dups), and the bound they should respect: the forwarder's
// in-flight window (FORWARDER_MAX_IN_FLIGHT, default 3500), as only a
// record written to Kafka and not yet acked on MQTT can come back. Kafka is
// one round trip away (BENCH_RTTS).
func BenchmarkKillMidDrain(b *testing.B) {
	for _, rtt := range testkit.BenchRTTs(b) {
		d := atRTT(rtt)
		b.Run(d.name(), func(b *testing.B) { killMidDrain(b, d) })
	}
}

func killMidDrain(b *testing.B, d distance) {
	const n = 20_000
	for b.Loop() {
		mq, k := forwarderBacklog(b, n, d)

		c := startForwarder(b, mq, k)
		c.waitMetric(b, "forwarder_acked_total", n/2, 120*time.Second, time.Millisecond)
		produced, acked := c.metric("forwarder_produced_total"), c.metric("forwarder_acked_total")
		_ = c.cmd.Process.Kill()
		<-c.done
		c = startForwarder(b, mq, k)
		recs := k.ReadN(b, stack.Topic, n, 120*time.Second, 2*time.Second)
		seen := make(map[string]bool, n)
		for _, r := range recs {
			seen[r.Key+"/"+r.Headers["seq"]] = true
		}
		if len(seen) != n {
			b.Fatalf("%d readings in Kafka after the restart, want %d", len(seen), n)
		}
		dups := len(recs) - n
		c.stop(b)
		b.ReportMetric(float64(dups), "dups")
		b.Logf("killed with %.0f produced and %.0f acked (last scrape); %d records in Kafka for %d readings: %d duplicates",
			produced, acked, len(recs), n, dups)
	}
}
