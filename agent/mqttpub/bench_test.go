package mqttpub_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// BenchmarkDrain100k drains a 100,000-reading backlog from the real bbolt
// buffer to a local mosquitto at QoS 1 and reports readings/s until the
// buffer is empty. delivery=broker deletes at PUBACK; delivery=kafka
// deletes when a stand-in forwarder, subscribed to the readings, confirms
// them, coalesced every 100ms or every 1s (the forwarder's
// default FORWARDER_CONFIRM_INTERVAL; with the default max_unconfirmed of
// 10,000 that interval bounds the drain at about 10,000 readings/s).
// Run it with -benchtime=1x under flock /tmp/bench.lock.
func BenchmarkDrain100k(b *testing.B) {
	mq := broker.StartMosquitto(b, broker.MosquittoConfig{})
	fwd := startBenchConfirmer(b, mq.URL())
	for _, bc := range []struct {
		name     string
		delivery mqttpub.Delivery
		every    time.Duration
	}{
		{"delivery=broker", mqttpub.DeliveryBroker, 0},
		{"delivery=kafka/confirm=100ms", mqttpub.DeliveryKafka, 100 * time.Millisecond},
		{"delivery=kafka/confirm=1s", mqttpub.DeliveryKafka, time.Second},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fwd.setInterval(bc.every)
			run := 0
			for b.Loop() {
				b.StopTimer()
				run++
				// A device of its own per run, so no confirmation of an
				// earlier run's seqs can reach this one.
				dev := fmt.Sprintf("pi-bench-%d-%d", time.Now().UnixNano(), run)
				buf := openBuffer(b)
				appendDevice(b, buf, dev, 100_000)
				p, err := mqttpub.New(buf, mqttpub.Options{URL: mq.URL(), DeviceID: dev, Delivery: bc.delivery})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				b.StartTimer()
				start := time.Now()
				go func() { done <- p.Run(ctx) }()
				for {
					st, err := buf.Stats()
					if err != nil {
						b.Fatal(err)
					}
					if st.Count == 0 {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				el := time.Since(start)
				b.StopTimer()
				cancel()
				<-done
				b.ReportMetric(100_000/el.Seconds(), "readings/s")
				buf.Close()
				b.StartTimer()
			}
		})
	}
}

// benchConfirmer is a minimal forwarder for the benchmark: it reads every
// reading and confirms its seq to the device every interval. It subscribes
// at QoS 0 so that its own cost stays small on a machine it shares with
// the broker and the agent (a lost reading would show as a re-send after
// confirm_timeout, i.e. a run of more than a minute).
type benchConfirmer struct {
	c     mqtt.Client
	mu    sync.Mutex
	sets  map[string]*confirm.Set
	every time.Duration
	wake  chan struct{}
}

func startBenchConfirmer(b testing.TB, url string) *benchConfirmer {
	f := &benchConfirmer{sets: map[string]*confirm.Set{}, wake: make(chan struct{}, 1)}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID("bench-forwarder").SetCleanSession(true).
		SetOrderMatters(true).SetMessageChannelDepth(10000)
	f.c = mqtt.NewClient(opts)
	if tok := f.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("confirmer connect: %v", tok.Error())
	}
	if tok := f.c.Subscribe("sensors/+/+/reading", 0, f.onReading); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("confirmer subscribe: %v", tok.Error())
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.loop(ctx) }()
	b.Cleanup(func() { cancel(); wg.Wait(); f.c.Disconnect(100) })
	return f
}

func (f *benchConfirmer) setInterval(d time.Duration) {
	f.mu.Lock()
	f.every = d
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

var seqKey = []byte(`"seq":`)

func (f *benchConfirmer) onReading(_ mqtt.Client, m mqtt.Message) {
	p := m.Payload()
	i := bytes.Index(p, seqKey)
	if i < 0 {
		return
	}
	p = p[i+len(seqKey):]
	j := 0
	for j < len(p) && p[j] >= '0' && p[j] <= '9' {
		j++
	}
	seq, err := strconv.ParseUint(string(p[:j]), 10, 64)
	if err != nil {
		return
	}
	dev := strings.Split(m.Topic(), "/")[1]
	f.mu.Lock()
	s := f.sets[dev]
	if s == nil {
		s = &confirm.Set{}
		f.sets[dev] = s
	}
	s.Add(seq)
	f.mu.Unlock()
}

func (f *benchConfirmer) loop(ctx context.Context) {
	for {
		f.mu.Lock()
		every := f.every
		f.mu.Unlock()
		if every <= 0 {
			every = time.Hour
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-f.wake:
			t.Stop()
			continue
		case <-t.C:
		}
		f.mu.Lock()
		var msgs []struct {
			dev string
			m   confirm.Message
		}
		for dev, s := range f.sets {
			if s.Len() > 0 {
				msgs = append(msgs, struct {
					dev string
					m   confirm.Message
				}{dev, confirm.Message{ForwarderID: "bench", Seqs: s.Ranges()}})
				s.Reset()
			}
		}
		f.mu.Unlock()
		for _, x := range msgs {
			f.c.Publish(confirm.Topic("sensors", x.dev), 1, false, confirm.Append(nil, &x.m)).WaitTimeout(5 * time.Second)
		}
	}
}
