package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/e2e/internal/tally"
	"github.com/edgepipe/sensorpipe/scripts/e2e/internal/topicread"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/proc"
)

// finish stops the agent cleanly, lets the forwarders drain, stops
// everything, reads the whole topic and builds the report. It is best
// effort: each step that fails becomes a problem in the report.
func finish(parent context.Context, s *stack, in *injector, drain *fault, runErr error, started time.Time) *report {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 4*time.Minute)
	defer cancel()
	n, interval := sensorPlan(s.opts.rate)
	rep := &report{
		Mode: "faults", Started: started, WorkDir: s.dir, Delivery: s.opts.delivery, BrokerQueue: s.opts.queue,
		Pipeline: fmt.Sprintf("edge-agent -> TCP proxy -> %s (TLS, the shipped permission table on the dynamic-security plugin, persistence) -> %d x cloud-forwarder ($share/%s) -> kfake (TLS, SASL PLAIN, behind a TCP proxy), topic %s with %d partitions",
			mosquittoVersion(ctx), s.opts.forwarders, shareGroup, topic, partitions),
		Sensors: n, IntervalMS: interval.Milliseconds(), Offered: float64(n) / interval.Seconds(),
		PerForwarder: map[string]int{}, PeakRSSKiB: map[string]int64{},
	}
	if !s.opts.faults {
		rep.Mode = "throughput"
	}
	problem := func(format string, a ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, a...)) }
	// lossProblems are the problems lost readings cause by themselves
	// (catch-ups that never come); -report-loss expects those.
	lossProblems := len(in.problems)
	lossProblem := func(format string, a ...any) { lossProblems++; problem(format, a...) }
	if runErr != nil {
		problem("%v", runErr)
	}
	rep.Problems = append(rep.Problems, in.problems...)

	if s.opts.delivery == "kafka" {
		// The forwarders sign with the key whose public half the agent has:
		// it must have refused none of their confirmations.
		for _, r := range []string{"unsigned", "bad_signature"} {
			if n := testkit.Metric(s.status, `edge_agent_bad_confirmations_total{reason="`+r+`"}`); n != 0 {
				problem("the agent refused %v confirmations as %s (want 0: the forwarders sign with its key)", n, r)
			}
		}
	}
	s.log.Info("stopping the agent (SIGTERM)")
	if err := s.agent.Stop(30 * time.Second); err != nil {
		problem("%v", err)
	} else if st := s.agent.ExitStatus(); st != "exit 0" {
		problem("edge-agent ended with %q after SIGTERM; want exit 0", st)
	}
	st, statsErr := s.readBufferStats(ctx)
	prefix, _, _ := s.tr.state()
	wantPrefix := prefix
	switch {
	case statsErr != nil:
		problem("produced count: %v", statsErr)
	case st.Count > 0:
		wantPrefix = st.OldestSeq - 1
	default:
		wantPrefix = st.LastSeq
	}
	s.log.Info("waiting for the forwarders to drain", "up_to_seq", wantPrefix)
	if err := s.tr.waitSeq(ctx, wantPrefix, 60*time.Second); err != nil {
		lossProblem("drain after the agent stopped: %v", err)
	}
	for _, f := range s.fwds {
		if err := f.Stop(20 * time.Second); err != nil {
			problem("%v", err)
		}
	}
	if err := s.mosq.Stop(10 * time.Second); err != nil {
		problem("%v", err)
	}

	s.log.Info("reading the whole topic with kgo")
	recs, err := topicread.ReadAll(ctx, s.reader)
	if err != nil {
		problem("read topic: %v", err)
	}
	if dlq, err := topicread.EndOffsets(ctx, s.reader, topic+".dlq"); err != nil {
		problem("read dlq offsets: %v", err)
	} else {
		for _, n := range dlq {
			rep.DLQ += n
		}
	}
	readAt := time.Now()
	var ds []tally.Delivery
	var copies []copyRec
	var maxSeq uint64
	for _, r := range recs {
		rep.Records++
		if r.Err != nil || r.Reading.DeviceID != deviceID {
			rep.Foreign++
			continue
		}
		rep.PerForwarder[r.Headers["forwarder_id"]]++
		if v := contractViolation(r); v != "" {
			rep.ContractBad++
			if rep.ContractEx == "" {
				rep.ContractEx = fmt.Sprintf("partition %d offset %d: %s", r.Partition, r.Offset, v)
			}
		}
		recv, ok := s.tr.received(recKey{r.Partition, r.Offset})
		if !ok {
			recv = readAt
		}
		ds = append(ds, tally.Delivery{Seq: r.Reading.Seq, TS: r.Reading.TS, Recv: recv})
		copies = append(copies, copyRec{Seq: r.Reading.Seq, Fwd: r.Headers["forwarder_id"], Partition: r.Partition, Offset: r.Offset, Recv: recv})
		maxSeq = max(maxSeq, r.Reading.Seq)
	}

	if rep.ContractBad > 0 {
		problem("%d records break the Kafka contract; first: %s", rep.ContractBad, rep.ContractEx)
	}
	final := maxSeq
	rep.ProducedFrom = "max seq found in Kafka: `edge-agent buffer stats` was unavailable, so a lost tail would go unseen"
	if statsErr == nil {
		final = st.LastSeq
		rep.ProducedFrom = "last_seq of `edge-agent buffer stats --json` after the agent stopped"
	}
	floor := s.floor
	if statsErr == nil && st.SeqFloor != floor {
		problem("the buffer's seq floor moved from %d to %d during the run", floor, st.SeqFloor)
	}
	rep.FirstSeq, rep.LastSeq = floor+1, final
	tl := tally.NewTimeline(floor, final, ds)
	sum := tl.Summary()
	rep.Produced, rep.Delivered, rep.Duplicates, rep.DupRate, rep.Unexpected = sum.Produced, sum.Delivered, sum.Duplicates, sum.DupRate, sum.Unexpected
	missing := sum.Missing
	if statsErr == nil && st.Count > 0 {
		// With delivery=kafka the buffer keeps what was not confirmed
		// before the stop, in any pattern: ask for the exact seqs.
		held, err := s.readBufferSeqs(ctx)
		if err != nil {
			problem("held readings: %v", err)
		}
		rep.Held = uint64(len(held))
		for _, seq := range held {
			if tl.Has(seq) {
				rep.HeldDelivered++
			}
			missing = subtract(missing, tally.Range{From: seq, To: seq})
		}
		if rep.Held != st.Count {
			problem("buffer stats count %d readings, export listed %d", st.Count, rep.Held)
		}
	}
	rep.MissingSeqs = missing
	rep.Missing = tally.Summary{Missing: missing}.MissingCount()
	rep.Database = s.dbNote
	if s.sink != nil {
		s.log.Info("waiting for the sink to write every reading in Kafka", "readings", rep.Delivered)
		rows, distinct, err := s.drainSink(ctx, int(rep.Delivered), 90*time.Second)
		rep.DBRows, rep.DBDistinct = rows, distinct
		switch {
		case err != nil:
			problem("database: %v", err)
		case rows != distinct:
			problem("database: %d rows for %d distinct (device_id, seq): duplicate rows", rows, distinct)
		case uint64(distinct) != rep.Delivered:
			problem("database: %d readings in PostgreSQL, %d unique readings in Kafka", distinct, rep.Delivered)
		}
	}

	var calm []tally.Window
	var since time.Time
	dupAt := duplicateArrivals(ds)
	for _, f := range in.faults {
		fr := result(tl, since, f)
		fr.Dups = countWithin(dupAt, f.Start, settledOr(f))
		if f.Kill != nil && !f.Kill.At.IsZero() {
			kd := countKillDups(copies, f.Kill, f.End, settledOr(f))
			fr.KillDups = &kd
			if kd.Redelivered > kd.Window {
				problem("%s: %d duplicates came back through the broker after %s's kill, more than its in-flight window of %d",
					f.Name, kd.Redelivered, f.Kill.Forwarder, kd.Window)
			}
		}
		if !f.Settled.IsZero() {
			since = f.Settled
		}
		rep.Faults = append(rep.Faults, fr)
		calm = append(calm, tally.Window{From: f.Start, To: settledOr(f)})
		if !fr.Complete {
			lossProblem("%s: some readings taken before the fault's end never reached Kafka", f.Name)
		}
	}
	if drain != nil {
		fr := result(tl, drain.Start, *drain)
		rep.Drain = &fr
		calm = append(calm, tally.Window{From: drain.Start, To: settledOr(*drain)})
	}
	rep.MissingWhere = attribute(missing, ds, rep.Faults)
	rep.LatencyAll = latencyOf(tl.Latencies())
	rep.LatencyCalm = latencyOf(tl.Latencies(calm...))
	rep.Taken, rep.Throughput = rates(ds, drain)

	for _, p := range append(append([]*proc.Proc{s.agent}, s.fwds...), s.sinkProcs()...) {
		rep.PeakRSSKiB[p.Name] = p.PeakRSSKB()
	}
	rep.RSSFrom = "not measured (no GNU time; -time flag)"
	if s.opts.timeBin != "" {
		rep.RSSFrom = "GNU time -v 'Maximum resident set size', largest over every incarnation"
	}
	rep.ElapsedS = time.Since(started).Seconds()
	rep.Pass = rep.Produced > 0 && rep.Missing == 0 && rep.Unexpected == 0 && len(rep.Problems) == 0
	if s.opts.lossOK && rep.Produced > 0 && rep.Unexpected == 0 && len(rep.Problems) == lossProblems {
		// -report-loss measures what a mode loses: missing readings (and
		// the catch-ups they cause to time out) are the result, not a failure.
		rep.Pass, rep.LossReported = true, rep.Missing
	}
	return rep
}

// contractViolation checks a record against docs/DESIGN.md's Kafka section:
// key = device_id, headers mqtt_topic/device_id/seq/forwarder_id, record
// time = reading ts.
func contractViolation(r topicread.Record) string {
	rd := r.Reading
	switch {
	case r.Key != rd.DeviceID:
		return fmt.Sprintf("key %q, want the device_id %q", r.Key, rd.DeviceID)
	case r.Headers["device_id"] != rd.DeviceID:
		return fmt.Sprintf("device_id header %q, want %q", r.Headers["device_id"], rd.DeviceID)
	case r.Headers["seq"] != strconv.FormatUint(rd.Seq, 10):
		return fmt.Sprintf("seq header %q, want %d", r.Headers["seq"], rd.Seq)
	case r.Headers["mqtt_topic"] != fmt.Sprintf("sensors/%s/%s/reading", rd.DeviceID, rd.Sensor):
		return fmt.Sprintf("mqtt_topic header %q", r.Headers["mqtt_topic"])
	case r.Headers["forwarder_id"] == "":
		return "no forwarder_id header"
	case !r.Timestamp.Equal(rd.TS.Truncate(time.Millisecond)):
		return fmt.Sprintf("record time %s, want the reading ts %s", r.Timestamp.UTC().Format(time.RFC3339Nano), rd.TS.UTC().Format(time.RFC3339Nano))
	}
	return ""
}

// duplicateArrivals are the arrival times of every copy of a reading but
// the first, sorted.
func duplicateArrivals(ds []tally.Delivery) []time.Time {
	sorted := slices.SortedFunc(slices.Values(ds), func(a, b tally.Delivery) int { return a.Recv.Compare(b.Recv) })
	seen := make(map[uint64]bool, len(sorted))
	var out []time.Time
	for _, d := range sorted {
		if seen[d.Seq] {
			out = append(out, d.Recv)
		}
		seen[d.Seq] = true
	}
	return out
}

// countWithin counts the sorted times in [from, to].
func countWithin(ts []time.Time, from, to time.Time) int {
	lo, _ := slices.BinarySearchFunc(ts, from, time.Time.Compare)
	hi, _ := slices.BinarySearchFunc(ts, to.Add(time.Nanosecond), time.Time.Compare)
	return hi - lo
}

// settledOr is when the fault settled, or now if it never did.
func settledOr(f fault) time.Time {
	if f.Settled.IsZero() {
		return time.Now()
	}
	return f.Settled
}

// result measures a fault's recovery on the timeline.
func result(tl *tally.Timeline, since time.Time, f fault) faultResult {
	r := tl.Recovery(since, f.End)
	fr := faultResult{fault: f, RecoveryS: r.Duration.Seconds(), Target: r.Target, Backlog: r.Backlog, Complete: r.Complete, ResumeS: -1}
	if d, ok := tl.Resume(f.End); ok {
		fr.ResumeS = d.Seconds()
	}
	if n, span := tl.Burst(f.End, f.End.Add(r.Duration)); span > 0 && r.Complete {
		fr.DrainRate = float64(n) / span.Seconds()
		fr.Drained = n
		fr.DrainS = span.Seconds()
	}
	return fr
}

// rates are readings taken (by reading ts) and delivered (by first
// arrival) per second, over the steady part of the run: before a drain
// phase, if any, and after the first reading arrived.
func rates(ds []tally.Delivery, drain *fault) (taken, delivered float64) {
	first := map[uint64]tally.Delivery{}
	for _, d := range ds {
		if o, ok := first[d.Seq]; !ok || d.Recv.Before(o.Recv) {
			first[d.Seq] = d
		}
	}
	var tsLo, tsHi, rLo, rHi time.Time
	nTS, nRecv := 0, 0
	for _, d := range first {
		if drain == nil || d.TS.Before(drain.Start) {
			nTS++
			tsLo, tsHi = minTime(tsLo, d.TS), maxTime(tsHi, d.TS)
		}
		if drain == nil || d.Recv.Before(drain.Start) {
			nRecv++
			rLo, rHi = minTime(rLo, d.Recv), maxTime(rHi, d.Recv)
		}
	}
	per := func(n int, lo, hi time.Time) float64 {
		if n < 2 || !hi.After(lo) {
			return 0
		}
		return float64(n-1) / hi.Sub(lo).Seconds()
	}
	return per(nTS, tsLo, tsHi), per(nRecv, rLo, rHi)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// subtract removes hole from every range of rs.
func subtract(rs []tally.Range, hole tally.Range) []tally.Range {
	var out []tally.Range
	for _, r := range rs {
		if r.To < hole.From || r.From > hole.To {
			out = append(out, r)
			continue
		}
		if r.From < hole.From {
			out = append(out, tally.Range{From: r.From, To: hole.From - 1})
		}
		if r.To > hole.To {
			out = append(out, tally.Range{From: hole.To + 1, To: r.To})
		}
	}
	return out
}

// attribute says, for the first few missing ranges, when the reading just
// before the gap was taken and which fault was going on then.
func attribute(missing []tally.Range, ds []tally.Delivery, faults []faultResult) []string {
	ts := map[uint64]time.Time{}
	for _, d := range ds {
		ts[d.Seq] = d.TS
	}
	var out []string
	for i, r := range missing {
		if i == 10 {
			break
		}
		before, ok := ts[r.From-1]
		if !ok {
			out = append(out, fmt.Sprintf("seqs %d-%d: nothing delivered just before", r.From, r.To))
			continue
		}
		during := "no fault"
		for _, f := range faults {
			if !before.Before(f.Start.Add(-time.Second)) && !before.After(settledOr(f.fault)) {
				during = f.Name
			}
		}
		out = append(out, fmt.Sprintf("seqs %d-%d: the reading before the gap was taken at %s (%s)",
			r.From, r.To, before.UTC().Format("15:04:05.000"), during))
	}
	return out
}
