package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// fault is one injected failure. The pipeline's recovery is measured from
// end: the moment the harness undid the fault (service back, process
// restarted).
type fault struct {
	Name  string    `json:"name"`
	What  string    `json:"what"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Settled is when the harness saw the pipeline caught up (or gave up
	// waiting); readings lost before it are charged to this fault.
	Settled time.Time `json:"settled"`
	Note    string    `json:"note,omitempty"`
	// Kill is what forwarder-kill-mid-drain saw of the forwarder it killed.
	Kill *kill `json:"kill,omitempty"`
}

// injector runs faults against a stack, one after another, waiting for the
// pipeline to catch up between them so each recovery stands alone.
type injector struct {
	s        *stack
	faults   []fault
	problems []string // catch-ups that timed out; the run goes on
}

func (in *injector) sleep(ctx context.Context, d time.Duration) error { return sleepCtx(ctx, d) }

// sleepCtx waits d, or less if ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settle waits until every reading taken before the last fault ended is in
// Kafka, then a little more. A timeout is noted as a problem and the run
// goes on (the final count says what was lost); a dead program ends it.
func (in *injector) settle(ctx context.Context) error {
	if err := in.s.checkAlive(); err != nil {
		return err
	}
	f := &in.faults[len(in.faults)-1]
	defer func() { f.Settled = time.Now() }()
	if err := in.s.tr.waitCaughtUp(ctx, f.End, in.s.opts.settle); err != nil {
		if ctx.Err() != nil {
			return err
		}
		in.problems = append(in.problems, fmt.Sprintf("after %s: %v", f.Name, err))
		in.s.log.Error("no catch-up", "fault", f.Name, "err", err, "programs", "\n"+in.s.diagnose())
		in.s.tr.forgive()
		return in.s.checkAlive()
	}
	in.s.log.Info("caught up", "fault", f.Name, "after", time.Since(f.End).Round(time.Millisecond))
	return in.sleep(ctx, 2*time.Second)
}

func (in *injector) begin(name, what string) *fault {
	in.s.log.Info("fault", "name", name, "what", what)
	in.faults = append(in.faults, fault{Name: name, What: what, Start: time.Now()})
	return &in.faults[len(in.faults)-1]
}

// step is one fault the injector can run, by name (see -only).
type step struct {
	name string
	run  func(context.Context) error
}

// steps lists every fault, in the order of a full run.
func (in *injector) steps() []step {
	return []step{
		{"intruders", in.intruders},
		{"broker-restart", in.brokerRestart},
		{"silent-cut", in.silentCut},
		{"kafka-outage", in.kafkaOutage},
		{"forwarders-down", in.forwardersDown},
		{"agent-kill", in.agentKill},
		{"agent-kill-twice", in.agentKillTwice},
		{"forwarder-kill", in.forwarderKill},
		{"forwarder-kill-unconfirmed", in.forwarderKillUnconfirmed},
		{"forwarder-kill-mid-drain", in.forwarderKillMidDrain},
		{"full-buffer-restart", in.fullBuffer},
	}
}

// run injects every fault (or those -only names), one after another.
func (in *injector) run(ctx context.Context) error {
	for _, st := range in.steps() {
		if in.s.opts.only != nil && !in.s.opts.only[st.name] {
			continue
		}
		if err := st.run(ctx); err != nil {
			return err
		}
		if err := in.settle(ctx); err != nil {
			return err
		}
		if k := in.faults[len(in.faults)-1].Kill; k != nil {
			k.Redelivered = testkit.Metric(k.addr, "forwarder_redelivered_total")
		}
	}
	return nil
}

// brokerRestart restarts mosquitto with nothing held back: mosquitto 2.0
// does not persist shared subscriptions, so until the forwarders have
// subscribed again it drops what the agent publishes. With delivery=kafka
// the agent re-sends those readings when they stay unconfirmed.
func (in *injector) brokerRestart(ctx context.Context) error {
	f := in.begin("broker-restart", "mosquitto stopped (SIGTERM, saves its persistence file) and started again 3s later; "+
		"the agent reconnects at once, before the forwarders' shared subscriptions exist again")
	logFrom := fileSize(brokerLog(in.s.dir))
	if err := in.s.mosq.Stop(10 * time.Second); err != nil {
		return err
	}
	if err := in.sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	if err := in.s.startBroker(ctx); err != nil {
		return err
	}
	up := time.Now()
	f.End = up
	var subs []string
	for _, p := range in.s.fwds {
		subs = append(subs, p.Name+" 1 $share/")
	}
	if err := waitLog(ctx, brokerLog(in.s.dir), logFrom, subs, 30*time.Second); err != nil {
		f.Note = "forwarders did not re-subscribe within 30s: " + err.Error()
	} else {
		f.Note = fmt.Sprintf("forwarders re-subscribed %.1fs after the broker came back; what the agent published before that had no subscriber", time.Since(up).Seconds())
	}
	return nil
}

// fileSize is the size of path, 0 if it cannot be read.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// waitLog waits until every one of want appears in path past offset.
func waitLog(ctx context.Context, path string, offset int64, want []string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if offset > int64(len(b)) {
			offset = 0
		}
		tail := string(b[offset:])
		missing := 0
		for _, w := range want {
			if !strings.Contains(tail, w) {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %q not in %s after %v", missing, want, path, d)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (in *injector) silentCut(ctx context.Context) error {
	d := in.s.opts.cut
	f := in.begin("silent-cut", fmt.Sprintf("agent<->broker link black-holed for %v: bytes dropped both ways, no FIN/RST; redials hang too", d))
	in.s.link.SetMode(tcpproxy.Blackhole)
	if err := in.sleep(ctx, d); err != nil {
		return err
	}
	in.s.link.SetMode(tcpproxy.Pass)
	f.End = time.Now()
	if acc := in.s.link.AcceptsSince(f.Start); len(acc) > 0 {
		f.Note = fmt.Sprintf("agent noticed the dead link and redialed %.1fs after the cut", acc[0].Sub(f.Start).Seconds())
	} else {
		f.Note = "agent did not redial during the cut"
	}
	return nil
}

func (in *injector) kafkaOutage(ctx context.Context) error {
	d := in.s.opts.kafkaDown
	f := in.begin("kafka-outage", fmt.Sprintf("every Kafka connection closed and new ones refused for %v", d))
	in.s.kafka.Cut()
	if err := in.sleep(ctx, d); err != nil {
		return err
	}
	in.s.kafka.Restore()
	f.End = time.Now()
	return nil
}

// restartAgent starts the agent and marks the fault's end at the start.
func (in *injector) restartAgent(ctx context.Context, f *fault) error {
	f.End = time.Now()
	return in.s.startAgent(ctx)
}

func (in *injector) agentKill(ctx context.Context) error {
	f := in.begin("agent-kill-1", "edge-agent killed with SIGKILL while publishing, restarted 2s later")
	if err := in.s.agent.Kill9(); err != nil {
		return err
	}
	if err := in.sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	return in.restartAgent(ctx, f)
}

func (in *injector) agentKillTwice(ctx context.Context) error {
	f := in.begin("agent-kill-2", "edge-agent killed with SIGKILL, down 5s, restarted")
	if err := in.s.agent.Kill9(); err != nil {
		return err
	}
	if err := in.sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	if err := in.restartAgent(ctx, f); err != nil {
		return err
	}
	// Kill it again while it drains the 5s backlog: unacked publishes in flight.
	if err := in.sleep(ctx, 700*time.Millisecond); err != nil {
		return err
	}
	f.Settled = time.Now() // not caught up: the next kill interrupts its drain on purpose
	f = in.begin("agent-kill-3", "edge-agent killed with SIGKILL 0.7s after the previous restart, mid-backlog; restarted 1s later")
	if err := in.s.agent.Kill9(); err != nil {
		return err
	}
	if err := in.sleep(ctx, time.Second); err != nil {
		return err
	}
	return in.restartAgent(ctx, f)
}

func (in *injector) forwarderKill(ctx context.Context) error {
	p := in.s.fwds[0]
	f := in.begin("forwarder-kill", p.Name+" killed with SIGKILL (unacked MQTT messages in flight), restarted 5s later")
	if err := p.Kill9(); err != nil {
		return err
	}
	if err := in.sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	f.End = time.Now()
	if err := p.Start(); err != nil {
		return err
	}
	return nil
}

// forwardersDown stops every forwarder (SIGTERM) for a while: their
// persistent sessions queue at most -broker-queue messages each, and the
// broker discards the rest, as HiveMQ and EMQX do.
func (in *injector) forwardersDown(ctx context.Context) error {
	d := in.s.opts.fwdDown
	f := in.begin("forwarders-down", fmt.Sprintf("every cloud-forwarder stopped (SIGTERM) for %v; the broker queues at most %d messages per session and drops the rest",
		d, in.s.opts.queue))
	for _, p := range in.s.fwds {
		if err := p.Stop(20 * time.Second); err != nil {
			return err
		}
	}
	if err := in.sleep(ctx, d); err != nil {
		return err
	}
	f.End = time.Now()
	for _, p := range in.s.fwds {
		if err := p.Start(); err != nil {
			return err
		}
	}
	return nil
}

// forwarderKillUnconfirmed kills a forwarder right after Kafka acknowledged
// records it has not yet confirmed to the device: the confirmations die
// with it, and the agent must re-send those readings.
func (in *injector) forwarderKillUnconfirmed(ctx context.Context) error {
	i := len(in.s.fwds) - 1
	p := in.s.fwds[i]
	f := in.begin("forwarder-kill-unconfirmed", p.Name+" killed with SIGKILL just after Kafka acked records it had not yet confirmed to the device, restarted 5s later")
	f.Note = in.waitUnconfirmed(ctx, in.s.fwdListen[i])
	if err := p.Kill9(); err != nil {
		return err
	}
	if err := in.sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	f.End = time.Now()
	return p.Start()
}

// waitUnconfirmed waits (up to 5s) until the forwarder at addr has had more
// records acked by Kafka than seqs confirmed, and says how many.
func (in *injector) waitUnconfirmed(ctx context.Context, addr string) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		acked := testkit.Metric(addr, "forwarder_produced_total") + testkit.Metric(addr, "forwarder_dlq_total")
		confirmed := testkit.Metric(addr, "forwarder_confirmed_seqs_total")
		if acked-confirmed > 0 || time.Now().After(deadline) {
			return fmt.Sprintf("at the kill: %.0f records acked by Kafka, %.0f seqs confirmed to the device", acked, confirmed)
		}
		if sleepCtx(ctx, 20*time.Millisecond) != nil {
			return ""
		}
	}
}

func (in *injector) fullBuffer(ctx context.Context) error {
	d := in.s.opts.fill
	f := in.begin("full-buffer-restart", fmt.Sprintf("broker unreachable for %v (the agent buffers), agent stopped (SIGTERM) for 3s, then started with the backlog and the broker back", d))
	in.s.link.SetMode(tcpproxy.Refuse)
	if err := in.sleep(ctx, d); err != nil {
		return err
	}
	if err := in.s.agent.Stop(20 * time.Second); err != nil {
		return err
	}
	st, err := in.s.readBufferStats(ctx)
	if err == nil {
		f.Note = fmt.Sprintf("buffer held %d readings (seq %d..%d) when the agent restarted", st.Count, st.OldestSeq, st.NewestSeq)
	} else {
		f.Note = "buffer stats unavailable: " + err.Error()
	}
	if err := in.sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	in.s.link.SetMode(tcpproxy.Pass)
	return in.restartAgent(ctx, f)
}
