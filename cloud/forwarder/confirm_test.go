package forwarder_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

const ackFilter = "sensors/+/ack"

func ackTopic(dev string) string { return confirm.Topic("sensors", dev) }

// waitConfirmed waits until every seq in from..to is confirmed to each of devs.
func waitConfirmed(t *testing.T, acks *stack.AckCollector, devs []string, from, to uint64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		missing := 0
		var first string
		for _, dev := range devs {
			got := acks.Confirmed(ackTopic(dev))
			for s := from; s <= to; s++ {
				if got[s] == 0 {
					if missing == 0 {
						first = fmt.Sprintf("%s seq %d", dev, s)
					}
					missing++
				}
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d seqs never confirmed (first: %s); got %d confirmations", missing, first, len(acks.Acks()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkAckShape verifies every confirmation is well formed: the forwarder's
// id, ranges sorted, disjoint and not adjacent, as the agent expects.
func checkAckShape(t *testing.T, acks []stack.Ack, fwdIDs ...string) {
	t.Helper()
	for _, a := range acks {
		if !slices.Contains(fwdIDs, a.Msg.ForwarderID) {
			t.Errorf("%s: forwarder_id %q, want one of %v", a.Topic, a.Msg.ForwarderID, fwdIDs)
		}
		if len(a.Msg.Seqs) == 0 {
			t.Errorf("%s: confirmation without seqs", a.Topic)
		}
		for i, r := range a.Msg.Seqs {
			if r.First == 0 || r.First > r.Last {
				t.Errorf("%s: bad range %v", a.Topic, r)
			}
			if i > 0 && r.First <= a.Msg.Seqs[i-1].Last+1 {
				t.Errorf("%s: ranges %v and %v overlap or touch", a.Topic, a.Msg.Seqs[i-1], r)
			}
		}
	}
}

// viaProxy points the forwarder's env at a fault proxy in front of b, so a
// test can take the broker away from the forwarder alone (its sessions stay).
func viaProxy(t *testing.T, b *broker.Broker, env map[string]string) *tcpproxy.Proxy {
	p := tcpproxy.New(t, b.TLSAddr)
	env["HIVEMQ_URL"] = "ssl://" + p.Addr()
	return p
}

// TestConfirmAfterKafkaAck: with Kafka unreachable nothing is confirmed;
// once Kafka has the records, every one of them is, and nothing else.
func TestConfirmAfterKafkaAck(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	env := stack.Env(b, k, certs, "fwd-confirm")
	env["FORWARDER_CONFIRM_INTERVAL"] = "200ms"
	fwd := start(t, env)
	devs := stack.Devices(3)
	pub := stack.NewPublisher(t, b, certs, "pub-confirm")

	k.Cut()
	pub.PublishReadings(t, devs, 1, 20)
	waitMetric(t, fwd.addr, "forwarder_received_total", 60)
	time.Sleep(1500 * time.Millisecond) // > 7 intervals, and long enough for kafka-go to give up its first attempts
	if got := acks.Acks(); len(got) != 0 {
		t.Fatalf("%d confirmations while Kafka was unreachable: %+v", len(got), got[0])
	}
	if produced := metric(t, fwd.addr, "forwarder_produced_total"); produced != 0 {
		t.Fatalf("forwarder_produced_total = %v with Kafka cut", produced)
	}

	k.Restore()
	waitConfirmed(t, acks, devs, 1, 20, 30*time.Second)
	recs := k.ReadN(t, stack.Topic, len(devs)*20, 30*time.Second, 200*time.Millisecond)
	checkReadings(t, recs, devs, 20, "fwd-confirm")
	checkAckShape(t, acks.Acks(), "fwd-confirm")
	for _, d := range devs {
		for s := range acks.Confirmed(ackTopic(d)) {
			if s < 1 || s > 20 {
				t.Errorf("%s: seq %d confirmed, never published", d, s)
			}
		}
	}
	if n := acks.Undecodable(); n != 0 {
		t.Errorf("%d confirmations do not decode", n)
	}
}

// TestConfirmOff: with FORWARDER_CONFIRM=false (a fleet of delivery: broker
// agents) readings reach Kafka and no confirmation is published.
func TestConfirmOff(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks-off", ackFilter)
	env := stack.Env(b, k, certs, "fwd-confirm-off")
	env["FORWARDER_CONFIRM"] = "false"
	env["FORWARDER_CONFIRM_INTERVAL"] = "100ms"
	fwd := start(t, env)
	devs := stack.Devices(2)
	pub := stack.NewPublisher(t, b, certs, "pub-confirm-off")
	pub.PublishReadings(t, devs, 1, 10)
	recs := k.ReadN(t, stack.Topic, len(devs)*10, 30*time.Second, 200*time.Millisecond)
	checkReadings(t, recs, devs, 10, "fwd-confirm-off")
	time.Sleep(500 * time.Millisecond) // 5 intervals: time enough for a confirmation to arrive
	if got := acks.Acks(); len(got) != 0 {
		t.Fatalf("%d confirmations with FORWARDER_CONFIRM=false, first %+v", len(got), got[0])
	}
	if n := metric(t, fwd.addr, "forwarder_confirmations_published_total"); n != 0 {
		t.Fatalf("forwarder_confirmations_published_total = %v, want 0", n)
	}
}

// TestConfirmCoalescing: a burst of readings is confirmed in few messages,
// at most one per device per interval, covering exactly the seqs published.
func TestConfirmCoalescing(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	const interval = 300 * time.Millisecond
	env := stack.Env(b, k, certs, "fwd-coalesce")
	env["FORWARDER_CONFIRM_INTERVAL"] = interval.String()
	fwd := start(t, env)
	devs := stack.Devices(4)
	pub := stack.NewPublisher(t, b, certs, "pub-coalesce")

	const n = 400
	began := time.Now()
	for s := uint64(1); s <= n; s += 50 {
		pub.PublishReadings(t, devs, s, s+49)
		time.Sleep(50 * time.Millisecond)
	}
	waitConfirmed(t, acks, devs, 1, n, 30*time.Second)
	elapsed := time.Since(began)
	got := acks.Acks()
	checkAckShape(t, got, "fwd-coalesce")

	maxMsgs := int(elapsed/interval) + 2
	for _, d := range devs {
		var times []time.Time
		for _, a := range got {
			if a.Topic == ackTopic(d) {
				times = append(times, a.At)
			}
		}
		if len(times) > maxMsgs || len(times) > n/10 {
			t.Errorf("%s: %d confirmations for %d readings in %v; want at most %d (one per %v)", d, len(times), n, elapsed, maxMsgs, interval)
		}
		for i := 2; i < len(times); i++ {
			// Arrival times carry the broker's and the scheduler's jitter on
			// top of the send times (TestConfirmerSchedule checks those
			// exactly): allow one interval of it over two gaps.
			if gap := times[i].Sub(times[i-2]); gap < interval {
				t.Errorf("%s: confirmations %d to %d arrived within %v, interval %v", d, i-2, i, gap, interval)
			}
		}
		for s, c := range acks.Confirmed(ackTopic(d)) {
			if s < 1 || s > n {
				t.Errorf("%s: seq %d confirmed, never published", d, s)
			}
			if c != 1 {
				t.Errorf("%s: seq %d confirmed %d times without any failure", d, s, c)
			}
		}
		t.Logf("%s: %d readings confirmed in %d messages", d, n, len(times))
	}
	waitMetric(t, fwd.addr, "forwarder_confirmed_seqs_total", float64(len(devs)*n))
	waitMetric(t, fwd.addr, "forwarder_confirmations_published_total", float64(len(got)))
}

// TestConfirmDeadLetters: a dead-lettered payload whose seq can be read is
// confirmed to the device of its topic (it is delivered, to the DLQ); one
// whose seq cannot be read is counted.
func TestConfirmDeadLetters(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	env := stack.Env(b, k, certs, "fwd-confirm-dlq")
	env["FORWARDER_CONFIRM_INTERVAL"] = "100ms"
	fwd := start(t, env)
	pub := stack.NewPublisher(t, b, certs, "pub-confirm-dlq")
	topic := stack.ReadingTopic("pi-0")

	big := append(append([]byte(`{"v":1,"device_id":"pi-0","seq":5,"sensor":"sim-1","ts":"2026-11-25T10:15:02Z","values":{"t":1},"pad":"`),
		bytes.Repeat([]byte("a"), 100<<10)...), `"}`...)
	pub.Publish(t, topic, reading.Encode(nil, stack.Reading("pi-0", 1)))
	pub.Publish(t, topic, []byte(`{"v":1,"device_id":"pi-0","seq":2,"sensor":"sim-1","values":{"t":1}}`)) // no ts
	pub.Publish(t, topic, reading.Encode(nil, stack.Reading("pi-0", 3)))
	pub.Publish(t, topic, []byte("\x00\x01 not json"))                                                                 // no seq to read
	pub.Publish(t, topic, []byte(`{"v":1,"device_id":"pi-0","seq":4,"ts":"2026-11-25T10:15:02Z","values":{"t":NaN}}`)) // not JSON
	pub.Publish(t, topic, big)                                                                                         // over 64 KiB, seq readable

	waitConfirmed(t, acks, []string{"pi-0"}, 1, 3, 20*time.Second)
	waitConfirmed(t, acks, []string{"pi-0"}, 5, 5, 20*time.Second)
	waitMetric(t, fwd.addr, "forwarder_dlq_total", 4)
	waitMetric(t, fwd.addr, "forwarder_dlq_unconfirmable_total", 2)
	time.Sleep(300 * time.Millisecond) // three intervals: anything else would have been sent
	got := acks.Confirmed(ackTopic("pi-0"))
	want := map[uint64]int{1: 1, 2: 1, 3: 1, 5: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("confirmed %v, want %v", got, want)
	}
	checkAckShape(t, acks.Acks(), "fwd-confirm-dlq")
}

// TestConfirmAcrossBrokerOutage: confirmations that fall due while the
// broker is unreachable are kept and sent after the reconnect.
func TestConfirmAcrossBrokerOutage(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	env := stack.Env(b, k, certs, "fwd-confirm-outage")
	env["FORWARDER_CONFIRM_INTERVAL"] = "1s"
	link := viaProxy(t, b, env)
	fwd := start(t, env)
	devs := stack.Devices(2)
	pub := stack.NewPublisher(t, b, certs, "pub-confirm-outage")

	pub.PublishReadings(t, devs, 1, 10)
	waitMetric(t, fwd.addr, "forwarder_acked_total", 20)
	waitConfirmed(t, acks, devs, 1, 10, 10*time.Second)
	pub.PublishReadings(t, devs, 11, 30)
	waitMetric(t, fwd.addr, "forwarder_acked_total", 60)
	link.SetMode(tcpproxy.Refuse) // within the interval after the first confirmations: 11..30 are pending
	time.Sleep(2500 * time.Millisecond)
	if code, _ := get(fwd.addr, "/readyz"); code != 503 {
		t.Errorf("/readyz = %d with the broker unreachable", code)
	}
	link.SetMode(tcpproxy.Pass)
	waitReady(t, fwd.addr, 30*time.Second)
	waitConfirmed(t, acks, devs, 1, 30, 30*time.Second)
	checkAckShape(t, acks.Acks(), "fwd-confirm-outage")
}

// TestConfirmOnStop: a graceful stop confirms what Kafka acknowledged
// instead of leaving it to the devices' confirm timeout.
func TestConfirmOnStop(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	env := stack.Env(b, k, certs, "fwd-confirm-stop")
	env["FORWARDER_CONFIRM_INTERVAL"] = "1m"
	fwd := start(t, env)
	devs := stack.Devices(2)
	pub := stack.NewPublisher(t, b, certs, "pub-confirm-stop")
	pub.PublishReadings(t, devs, 1, 1)
	waitConfirmed(t, acks, devs, 1, 1, 10*time.Second) // the first confirmation of a device goes out at once
	pub.PublishReadings(t, devs, 2, 40)
	waitMetric(t, fwd.addr, "forwarder_acked_total", 80)
	if err := fwd.stop(); err != nil {
		t.Fatal(err)
	}
	waitConfirmed(t, acks, devs, 1, 40, 5*time.Second)
}

// TestConfirmBrokerFlaps cuts the broker three times while confirmations
// are being published every 10 ms for 50 devices: every seq still ends up
// confirmed, and (under -race) paho's resume of a confirmation caught in
// flight does not race with the writer of the dead connection.
func TestConfirmBrokerFlaps(t *testing.T) {
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	acks := stack.CollectAcks(t, b, certs, "devices-acks", ackFilter)
	env := stack.Env(b, k, certs, "fwd-flaps")
	env["FORWARDER_CONFIRM_INTERVAL"] = "10ms"
	link := viaProxy(t, b, env)
	fwd := start(t, env)
	devs := stack.Devices(50)
	const rounds, per = 3, 20
	pub := stack.NewPublisher(t, b, certs, "pub-flaps")
	for i := range uint64(rounds) {
		pub.PublishReadings(t, devs, i*per+1, i*per+per)
		time.Sleep(time.Duration(i*5) * time.Millisecond) // cut at different points of the flow
		link.SetMode(tcpproxy.Refuse)
		time.Sleep(200 * time.Millisecond)
		link.SetMode(tcpproxy.Pass)
		waitReady(t, fwd.addr, 45*time.Second) // paho's reconnect backoff doubles with each loss
	}
	// Each reconnect brings duplicates (unacked messages redelivered), so
	// reading as many records as readings is not reading every reading.
	var recs []kafka.Record
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		recs = k.ReadN(t, stack.Topic, len(devs)*rounds*per, 10*time.Second, 300*time.Millisecond)
		if unique(recs) == len(devs)*rounds*per || time.Now().After(deadline) {
			break
		}
	}
	checkReadings(t, recs, devs, rounds*per, "fwd-flaps")
	waitConfirmed(t, acks, devs, 1, rounds*per, 45*time.Second)
}

// unique counts the distinct (device_id, seq) among recs.
func unique(recs []kafka.Record) int {
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Headers["device_id"]+"/"+r.Headers["seq"]] = true
	}
	return len(seen)
}
