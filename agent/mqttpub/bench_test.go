package mqttpub_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// confirmerEnv, when set to a broker URL, makes the test binary a stand-in
// forwarder instead of running tests (see TestMain).
const confirmerEnv = "MQTTPUB_BENCH_CONFIRMER"

func TestMain(m *testing.M) {
	if url := os.Getenv(confirmerEnv); url != "" {
		os.Exit(runConfirmer(url, os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// BenchmarkDrain100k drains a 100,000-reading backlog from the real bbolt
// buffer to a local mosquitto at QoS 1 until the buffer is empty, in each
// delivery mode, the modes interleaved within every iteration so that a
// busy machine weighs on them alike. delivery=broker deletes at PUBACK;
// delivery=kafka deletes when a stand-in forwarder (a child process
// subscribed to the readings) confirms them, coalesced every 100ms or
// every 1s (the forwarder's default FORWARDER_CONFIRM_INTERVAL), and, as
// the forwarder does, at once when 1,000 seqs wait (broker.Prompt): without that the 1s
// interval with the default max_unconfirmed of 10,000 bounded the drain at
// about 10,000 readings/s (a last mode raises max_unconfirmed to 50,000). It reports readings/s and the agent process's
// CPU time per reading (user+sys), which a loaded machine disturbs less,
// and the peak of the ledger's entries (sampled every 5 ms), which
// max_unconfirmed bounds however fast the drain.
// Run it under flock /tmp/bench.lock.
func BenchmarkDrain100k(b *testing.B) {
	const n = 100_000
	mq := broker.StartMosquitto(b, broker.MosquittoConfig{})
	fwd := startConfirmerProcess(b, mq.URL())
	modes := []struct {
		name     string
		delivery mqttpub.Delivery
		every    time.Duration
		max      int // max_unconfirmed; 0: the default (10,000)
	}{
		{"broker", mqttpub.DeliveryBroker, 0, 0},
		{"kafka/confirm=100ms", mqttpub.DeliveryKafka, 100 * time.Millisecond, 0},
		{"kafka/confirm=1s", mqttpub.DeliveryKafka, time.Second, 0},
		{"kafka/confirm=1s/max_unconfirmed=50000", mqttpub.DeliveryKafka, time.Second, 50_000},
	}
	wall := make([]time.Duration, len(modes))
	cpu := make([]time.Duration, len(modes))
	ledger := make([]int, len(modes)) // peak entries, sampled with the buffer's count
	runs := 0
	for b.Loop() {
		runs++
		for i, m := range modes {
			b.StopTimer()
			fwd.setInterval(b, m.every)
			// A device of its own per run, so no confirmation of an
			// earlier run's seqs can reach this one.
			dev := fmt.Sprintf("pi-bench-%d-%d", time.Now().UnixNano(), i)
			buf := openBuffer(b)
			appendDevice(b, buf, dev, n)
			p, err := mqttpub.New(buf, mqttpub.Options{URL: mq.URL(), DeviceID: dev, Delivery: m.delivery, MaxUnconfirmed: m.max})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.StartTimer()
			start, cpu0 := time.Now(), processCPU(b)
			go func() { done <- p.Run(ctx) }()
			for {
				st, err := buf.Stats()
				if err != nil {
					b.Fatal(err)
				}
				ledger[i] = max(ledger[i], mqttpub.LedgerEntries(p))
				if st.Count == 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			wall[i] += time.Since(start)
			cpu[i] += processCPU(b) - cpu0
			b.StopTimer()
			cancel()
			<-done
			buf.Close()
			b.StartTimer()
		}
	}
	for i, m := range modes {
		b.ReportMetric(float64(n*runs)/wall[i].Seconds(), m.name+"_readings/s")
		b.ReportMetric(float64(cpu[i].Microseconds())/float64(n*runs), m.name+"_cpu_us/reading")
		b.ReportMetric(float64(ledger[i]), m.name+"_peak-ledger-entries")
	}
}

// processCPU is this process's user+system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// confirmerProcess is the stand-in forwarder running as a child process,
// so its CPU time is not the agent's; its stdin sets the interval.
type confirmerProcess struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	ready *bufio.Reader
}

func startConfirmerProcess(b *testing.B, url string) *confirmerProcess {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), confirmerEnv+"="+url)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &confirmerProcess{cmd: cmd, in: in, ready: bufio.NewReader(out)}
	b.Cleanup(func() { in.Close(); cmd.Wait() })
	c.ack(b) // subscribed
	return c
}

func (c *confirmerProcess) ack(b *testing.B) {
	b.Helper()
	if line, err := c.ready.ReadString('\n'); err != nil || line != "ok\n" {
		b.Fatalf("confirmer: %q %v", line, err)
	}
}

// setInterval changes how often it confirms; 0 stops confirming.
func (c *confirmerProcess) setInterval(b *testing.B, d time.Duration) {
	b.Helper()
	fmt.Fprintln(c.in, d.String())
	c.ack(b)
}

// runConfirmer is the child's main: a broker.Prompt subscribed to every
// reading at QoS 0 (to keep its own cost small: a lost reading would show
// as a re-send after confirm_timeout, i.e. a run of more than a minute),
// confirming every interval, read as a duration per line on in (answered
// "ok"), until in closes.
func runConfirmer(url string, in io.Reader, out io.Writer) int {
	p, err := broker.StartPrompt(broker.PromptOptions{SubOptions: broker.SubOptions{URL: url, ClientID: "bench-forwarder"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "confirmer:", err)
		return 1
	}
	defer p.Close()
	fmt.Fprintln(out, "ok")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		d, err := time.ParseDuration(strings.TrimSpace(sc.Text()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "confirmer:", err)
			return 1
		}
		p.SetInterval(d)
		fmt.Fprintln(out, "ok")
	}
	return 0
}
