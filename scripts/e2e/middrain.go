package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	cloudconfig "github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// forwarder-kill-mid-drain checks the bound docs/FORWARDER.md promises for
// a crash: what comes back as duplicates is what was written to Kafka and
// not yet PUBACKed, at most the in-flight window (FORWARDER_MAX_IN_FLIGHT).
// The window fills only while a forwarder holds a backlog bigger than it
// and Kafka is slower than the broker, so the fault builds both: every
// forwarder stopped until the broker queues two and a half windows per
// session, Kafka a round trip away, then the forwarders started and one
// killed at the worst moment its metrics and the topic show: window full,
// and Kafka holding at least half a window of its records whose
// acknowledgement is still on the way.
//
// The shipped window (FORWARDER_MAX_IN_FLIGHT's default, thousands) cannot
// fill here: the broker queues at most -broker-queue (1,000) messages per
// offline session and keeps at most 1,000 in flight, so the killed
// incarnation runs with -kill-window (200).
// The backlog stays small for the same reason: the dead forwarder's
// session also takes 5s of live readings, and what passes the cap is
// dropped (the agent re-sends it a confirm_timeout later, which only makes
// the fault slower).
//
// With delivery=kafka a kill also loses the confirmations the forwarder had
// not yet published for records Kafka acknowledged; the agent re-sends
// those readings. countKillDups tells the two apart.

// kill is what the harness saw of the forwarder it killed mid-drain.
type kill struct {
	Forwarder string `json:"forwarder"`
	// Started is when the killed incarnation was started; At is the kill.
	Started time.Time `json:"started"`
	At      time.Time `json:"at"`
	// Window is the killed incarnation's FORWARDER_MAX_IN_FLIGHT.
	Window int `json:"in_flight_window"`
	// Backlog is how many readings the agent published (broker PUBACKs)
	// while every forwarder was stopped.
	Backlog float64 `json:"backlog_published"`
	// Signal says whether the harness saw what it waits for before the
	// kill, or gave up waiting and killed anyway.
	Signal bool `json:"signal_seen"`
	// InFlight, Produced, Acked and Confirmed are forwarder_in_flight,
	// forwarder_produced_total, forwarder_acked_total and
	// forwarder_confirmed_seqs_total at the last scrape before the kill.
	InFlight  float64 `json:"in_flight"`
	Produced  float64 `json:"produced"`
	Acked     float64 `json:"acked"`
	Confirmed float64 `json:"confirmed_seqs"`
	// InKafka is how many of the incarnation's records the harness's
	// consumer had seen by then; InKafka - Produced of them were in Kafka
	// without the forwarder knowing yet.
	InKafka int `json:"in_kafka"`
	// Redelivered is forwarder_redelivered_total of the next incarnation
	// once the fault settled: the messages the broker sent it again with
	// the DUP flag, first thing after the reconnect (the killed one's
	// unacked messages); -1 if it could not be read.
	Redelivered float64 `json:"redelivered"`

	addr string // the forwarder's status listener
}

// shippedWindow is the forwarder's default FORWARDER_MAX_IN_FLIGHT.
func shippedWindow() int {
	for _, v := range cloudconfig.Vars {
		if v.Name == "FORWARDER_MAX_IN_FLIGHT" {
			n, _ := strconv.Atoi(v.Default)
			return n
		}
	}
	return 0
}

// forwarderKillMidDrain stops every forwarder until the broker holds two
// and a half windows per session (or all it queues), starts them again
// with Kafka -kill-rtt away, SIGKILLs the first one mid-drain
// (waitMidDrain) and restarts it 5s later as shipped, with Kafka near
// again.
func (in *injector) forwarderKillMidDrain(ctx context.Context) error {
	s := in.s
	p, addr := s.fwds[0], s.fwdListen[0]
	window := s.opts.killWindow
	if window == 0 {
		window = shippedWindow()
	}
	perSession := min(5*window/2, s.opts.queue)
	f := in.begin("forwarder-kill-mid-drain", fmt.Sprintf("every cloud-forwarder stopped (SIGTERM) until the broker queued ~%d readings per session, "+
		"started again with Kafka %v away; %s (FORWARDER_MAX_IN_FLIGHT=%d) killed with SIGKILL mid-drain, its window full and Kafka holding "+
		"records it had not yet seen acked; restarted 5s later", perSession, s.opts.killRTT, p.Name, window))
	k := &kill{Forwarder: p.Name, Window: window, Redelivered: -1, addr: addr}
	f.Kill = k
	for _, q := range s.fwds {
		if err := q.Stop(20 * time.Second); err != nil {
			return err
		}
	}
	var err error
	if k.Backlog, err = in.waitPublished(ctx, float64(perSession*len(s.fwds)), 2*time.Minute); err != nil {
		return err
	}
	proxy := s.kafka.Proxy()
	proxy.SetDelay(s.opts.killRTT/2, 0)
	defer proxy.SetDelay(0, 0)
	before := s.tr.fwdRecords(p.Name)
	env := p.Env
	p.Env = append(slices.Clip(env), "FORWARDER_MAX_IN_FLIGHT="+strconv.Itoa(window))
	k.Started = time.Now()
	err = p.Start()
	p.Env = env // the restart after the kill runs as shipped
	if err != nil {
		return err
	}
	for _, q := range s.fwds[1:] {
		if err := q.Start(); err != nil {
			return err
		}
	}
	if err := in.waitMidDrain(ctx, k, before, 15*time.Second); err != nil {
		return err
	}
	err = p.Kill9()
	k.At = time.Now()
	proxy.SetDelay(0, 0)
	if err != nil {
		return err
	}
	s.log.Info("forwarder killed mid-drain", "forwarder", p.Name, "signal_seen", k.Signal, "in_flight", k.InFlight, "window", window,
		"in_kafka", k.InKafka, "produced", k.Produced, "acked", k.Acked, "confirmed", k.Confirmed)
	if !k.Signal {
		f.Note = fmt.Sprintf("the kill MISSED the state it waits for (window full, half a window in Kafka unacknowledged): "+
			"at the last look %.0f in flight, %d records in Kafka, %.0f acknowledged to it; the backlog was %.0f readings",
			k.InFlight, k.InKafka, k.Produced, k.Backlog)
	}
	if err := in.sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	f.End = time.Now()
	return p.Start()
}

// waitPublished waits until the agent has published n more readings (the
// broker's PUBACKs, which it gives even for what it then drops), up to d,
// and returns how many it published.
func (in *injector) waitPublished(ctx context.Context, n float64, d time.Duration) (float64, error) {
	const name = "edge_agent_published_total"
	from := testkit.Metric(in.s.status, name)
	if from < 0 {
		return 0, fmt.Errorf("%s: not on the agent's /metrics at %s", name, in.s.status)
	}
	deadline := time.Now().Add(d)
	for {
		if err := in.sleep(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
		v := testkit.Metric(in.s.status, name)
		if v-from >= n || time.Now().After(deadline) {
			return v - from, nil
		}
	}
}

// waitMidDrain watches the forwarder k names, as fast as its metrics
// answer, until its in-flight window is full and the harness's consumer
// has seen at least half a window more of its records than Kafka has
// acknowledged to it (before is that consumer's count from its earlier
// incarnations), or d passes. k keeps the last look.
func (in *injector) waitMidDrain(ctx context.Context, k *kill, before int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		inKafka := in.s.tr.fwdRecords(k.Forwarder) - before
		m, err := testkit.Metrics(k.addr, "forwarder_in_flight", "forwarder_produced_total", "forwarder_acked_total", "forwarder_confirmed_seqs_total")
		if err == nil {
			k.InFlight, k.Produced, k.Acked, k.Confirmed = m["forwarder_in_flight"], m["forwarder_produced_total"], m["forwarder_acked_total"], m["forwarder_confirmed_seqs_total"]
			k.InKafka = inKafka
			if k.InFlight >= float64(k.Window) && k.Produced > 0 && float64(inKafka)-k.Produced >= float64(k.Window)/2 {
				k.Signal = true
				return nil
			}
		}
		if time.Now().After(deadline) {
			return nil
		}
		if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
			return err
		}
	}
}

// copyRec is one record of the device in the topic, as the kill's
// accounting needs it.
type copyRec struct {
	Seq       uint64
	Fwd       string // forwarder_id header
	Partition int32
	Offset    int64
	Recv      time.Time // when the harness's live consumer got it
}

// killDups are the duplicates a kill caused, told apart by how they came
// back.
type killDups struct {
	Window int `json:"in_flight_window"`
	// Redelivered are copies of readings the killed incarnation had written
	// to Kafka that the broker sent again to its successor: written and
	// not PUBACKed at the kill. The design bounds them by the window.
	Redelivered int `json:"redelivered"`
	// Resent are the other copies, arriving after the kill, of readings the
	// killed incarnation had written: the agent published them again
	// because their confirmation died with the forwarder (delivery=kafka).
	Resent int `json:"resent"`
}

// countKillDups counts the duplicates kill k caused. The killed
// incarnation's records are those of its forwarder_id received from its
// start until restarted (it cannot write before or after; the consumer's
// lag is far below the 5s it stays dead). The broker sends its successor
// the unacked messages first, in order, so the successor's first
// k.Redelivered records are the broker's redelivery (all of them if that
// count is unknown); a device's records share one partition (key =
// device_id), so offsets give that order. Copies counted arrive until
// settled.
func countKillDups(cs []copyRec, k *kill, restarted, settled time.Time) killDups {
	d := killDups{Window: k.Window}
	written := map[uint64]bool{}
	type at struct {
		p int32
		o int64
	}
	skip := map[at]bool{} // the killed incarnation's copies, and the successor's redelivered ones
	var next []copyRec
	for _, c := range cs {
		if c.Fwd != k.Forwarder || c.Recv.Before(k.Started) || c.Recv.After(settled) {
			continue
		}
		if c.Recv.Before(restarted) {
			written[c.Seq] = true
			skip[at{c.Partition, c.Offset}] = true
		} else {
			next = append(next, c)
		}
	}
	slices.SortFunc(next, func(a, b copyRec) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	r := len(next)
	if k.Redelivered >= 0 && int(k.Redelivered) < r {
		r = int(k.Redelivered)
	}
	for _, c := range next[:r] {
		skip[at{c.Partition, c.Offset}] = true
		if written[c.Seq] {
			d.Redelivered++
		}
	}
	for _, c := range cs {
		if written[c.Seq] && !skip[at{c.Partition, c.Offset}] && c.Recv.After(k.At) && !c.Recv.After(settled) {
			d.Resent++
		}
	}
	return d
}

// killLines describe a mid-drain kill and the duplicates it caused, for
// the report's fault table; none for other faults.
func (f faultResult) killLines(delivery string) []string {
	k, d := f.Kill, f.KillDups
	if k == nil || d == nil {
		return nil
	}
	full := "full"
	if k.InFlight < float64(k.Window) {
		full = "NOT full"
	}
	verdict := "within"
	if d.Redelivered > d.Window {
		verdict = "OVER"
	}
	state := fmt.Sprintf("at the last look before the kill: %.0f of %d in flight (window %s); Kafka held %d of its records, %.0f acknowledged to it: %d written and not yet PUBACKed",
		k.InFlight, k.Window, full, k.InKafka, k.Produced, k.InKafka-int(k.Produced))
	dups := fmt.Sprintf("duplicates the kill caused: %d sent again by the broker (written, not PUBACKed) = %s the in-flight window of %d (the bound checked)",
		d.Redelivered, verdict, d.Window)
	if delivery == "kafka" {
		state += fmt.Sprintf("; %.0f seqs in confirmations the broker had acknowledged", k.Confirmed)
		dups += fmt.Sprintf("; %d re-sent by the agent, their confirmation lost with the forwarder (not bounded by the window)", d.Resent)
	} else if d.Resent > 0 {
		dups += fmt.Sprintf("; %d more copies after the kill", d.Resent)
	}
	dups += fmt.Sprintf("; %d other copies in the fault window", max(f.Dups-d.Redelivered-d.Resent, 0))
	return []string{state, dups}
}
