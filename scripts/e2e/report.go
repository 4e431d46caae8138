package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/e2e/internal/tally"
)

// latency is a few points of a latency distribution, in milliseconds.
type latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func latencyOf(sorted []time.Duration) latency {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	l := latency{N: len(sorted), P50: ms(tally.Percentile(sorted, 50)), P99: ms(tally.Percentile(sorted, 99))}
	if len(sorted) > 0 {
		l.Max = ms(sorted[len(sorted)-1])
	}
	return l
}

func (l latency) String() string {
	return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d readings)", l.P50, l.P99, l.Max, l.N)
}

// faultResult is a fault and how the pipeline recovered from it.
type faultResult struct {
	fault
	RecoveryS float64 `json:"recovery_s"`
	Target    uint64  `json:"target_seq"`
	Backlog   uint64  `json:"backlog"`
	DrainRate float64 `json:"drain_per_s,omitempty"`
	ResumeS   float64 `json:"resume_s"` // first fresh reading in Kafka after the end; -1 if none
	Drained   int     `json:"drained"`  // readings that arrived from the first arrival after the end until caught up
	DrainS    float64 `json:"drain_s"`
	Complete  bool    `json:"complete"`
	// Dups are second and later copies of a reading that reached Kafka
	// between the fault's start and its settling.
	Dups int `json:"duplicates"`
	// KillDups splits the duplicates a mid-drain kill caused by how they
	// came back (forwarder-kill-mid-drain only).
	KillDups *killDups `json:"kill_duplicates,omitempty"`
}

// report is everything the harness measured; it prints as text and JSON.
type report struct {
	Mode          string           `json:"mode"`
	Delivery      string           `json:"delivery"`
	BrokerQueue   int              `json:"broker_max_queued_messages"`
	LossReported  uint64           `json:"loss_reported,omitempty"`
	Started       time.Time        `json:"started"`
	ElapsedS      float64          `json:"elapsed_s"`
	LoadStart     string           `json:"loadavg_start"`
	LoadEnd       string           `json:"loadavg_end"`
	Pipeline      string           `json:"pipeline"`
	Sensors       int              `json:"sensors"`
	IntervalMS    int64            `json:"interval_ms"`
	Offered       float64          `json:"offered_per_s"`
	Produced      uint64           `json:"produced"`
	FirstSeq      uint64           `json:"first_seq"`
	LastSeq       uint64           `json:"last_seq"`
	ProducedFrom  string           `json:"produced_from"`
	Delivered     uint64           `json:"delivered"`
	Missing       uint64           `json:"missing"`
	MissingSeqs   []tally.Range    `json:"missing_ranges,omitempty"`
	MissingWhere  []string         `json:"missing_where,omitempty"`
	HeldDelivered uint64           `json:"held_already_delivered"`
	Held          uint64           `json:"held_in_buffer"`
	Duplicates    uint64           `json:"duplicates"`
	DupRate       float64          `json:"duplicate_rate"`
	Records       int              `json:"records_in_topic"`
	Database      string           `json:"database"`
	DBRows        int              `json:"db_rows"`
	DBDistinct    int              `json:"db_distinct_readings"`
	Unexpected    uint64           `json:"unexpected_seqs"`
	Foreign       int              `json:"undecodable_or_foreign"`
	DLQ           int64            `json:"dlq_records"`
	ContractBad   int              `json:"contract_violations"`
	ContractEx    string           `json:"contract_example,omitempty"`
	PerForwarder  map[string]int   `json:"per_forwarder"`
	LatencyAll    latency          `json:"latency_all"`
	LatencyCalm   latency          `json:"latency_outside_faults"`
	Taken         float64          `json:"taken_per_s"`
	Throughput    float64          `json:"delivered_per_s"`
	Drain         *faultResult     `json:"drain,omitempty"`
	Faults        []faultResult    `json:"faults,omitempty"`
	PeakRSSKiB    map[string]int64 `json:"peak_rss_kib"`
	RSSFrom       string           `json:"rss_from"`
	Problems      []string         `json:"problems,omitempty"`
	Pass          bool             `json:"pass"`
	WorkDir       string           `json:"work_dir"`
}

func (r *report) text(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("==== sensorpipe e2e report (%s mode) ====", r.Mode)
	p("started     %s, took %.0fs", r.Started.UTC().Format(time.RFC3339), r.ElapsedS)
	p("host        load average (1/5/15 min) %s at the start, %s at the end; %d CPUs shared with whatever else runs", r.LoadStart, r.LoadEnd, runtime.NumCPU())
	p("pipeline    %s", r.Pipeline)
	p("delivery    %s (agent deletes a reading %s); broker queues at most %d messages per session", r.Delivery,
		map[string]string{"kafka": "when a forwarder confirms Kafka has it", "broker": "at the broker's PUBACK"}[r.Delivery], r.BrokerQueue)
	p("load        %d sim sensors every %d ms = %.0f readings/s offered", r.Sensors, r.IntervalMS, r.Offered)
	p("produced    %d  (seqs %d..%d; %s)", r.Produced, r.FirstSeq, r.LastSeq, r.ProducedFrom)
	p("delivered   %d unique readings in Kafka (%d records in the topic)", r.Delivered, r.Records)
	switch {
	case strings.HasPrefix(r.Database, "cloud-forwarder sink"):
		p("database    %d rows in PostgreSQL, %d distinct (device_id, seq), beside %d unique readings in Kafka (%s)", r.DBRows, r.DBDistinct, r.Delivered, r.Database)
	case r.Database != "":
		p("database    %s", r.Database)
	}
	if r.Held > 0 {
		p("held        %d readings still in the agent's buffer after its clean stop, %d of them already in Kafka (their confirmation, or in broker mode their PUBACK, came after the stop); the agent sends them again on its next start", r.Held, r.HeldDelivered)
	}
	p("missing     %d%s", r.Missing, missingList(r.MissingSeqs))
	for _, m := range r.MissingWhere {
		p("            %s", m)
	}
	p("duplicates  %d (%.3f%% of delivered)", r.Duplicates, 100*r.DupRate)
	p("dlq         %d records; undecodable or other device: %d; seqs past the last produced: %d", r.DLQ, r.Foreign, r.Unexpected)
	p("contract    %d records break docs/DESIGN.md's Kafka contract (key = device_id; headers mqtt_topic, device_id, seq, forwarder_id; record time = reading ts)", r.ContractBad)
	if r.ContractEx != "" {
		p("            first: %s", r.ContractEx)
	}
	var fw []string
	for k, v := range r.PerForwarder {
		fw = append(fw, fmt.Sprintf("%s %d", k, v))
	}
	p("forwarders  records per forwarder_id header: %s", strings.Join(fw, ", "))
	p("latency     measured = harness consumer receive time - reading ts (agent clock; same host), first copy of each seq")
	p("  all         %s", r.LatencyAll)
	p("  calm        %s  (readings taken outside fault+recovery windows)", r.LatencyCalm)
	p("throughput  %.1f readings/s taken by the agent (by reading ts), %.1f readings/s delivered (by arrival), before any drain phase", r.Taken, r.Throughput)
	if r.Drain != nil {
		p("drain       link refused %.0fs: backlog of %d readings caught up %.2fs after the link came back (first delivery after %.2fs, agent reconnect backoff);",
			r.Drain.End.Sub(r.Drain.Start).Seconds(), r.Drain.Backlog, r.Drain.RecoveryS, r.Drain.ResumeS)
		p("            %d readings (backlog + fresh) arrived in the last %.2fs = %.0f readings/s end to end", r.Drain.Drained, r.Drain.DrainS, r.Drain.DrainRate)
	}
	if len(r.Faults) > 0 {
		p("faults      recovery = from the fault's end until every reading taken before that moment is in Kafka;")
		p("            backlog = those readings not yet in Kafka at the end; resume = until the first reading taken after the end is in Kafka;")
		p("            drain/s = readings arriving per second from the first arrival after the end until caught up")
		p("            dups = copies of readings already in Kafka that arrived between the fault's start and its settling")
		p("  %-26s %9s %8s %9s %8s %7s  %s", "fault", "recovery", "backlog", "drain/s", "resume", "dups", "what")
		for _, f := range r.Faults {
			rec := fmt.Sprintf("%.2fs", f.RecoveryS)
			if !f.Complete {
				rec = "NEVER"
			}
			res := fmt.Sprintf("%.2fs", f.ResumeS)
			if f.ResumeS < 0 {
				res = "-"
			}
			drain := "-" // no backlog, or it all arrived in one fetch
			if f.DrainRate > 0 {
				drain = fmt.Sprintf("%.0f", f.DrainRate)
			}
			p("  %-26s %9s %8d %9s %8s %7d  %s", f.Name, rec, f.Backlog, drain, res, f.Dups, f.What)
			if f.Note != "" {
				p("  %-26s %9s %8s %9s %8s %7s  (%s)", "", "", "", "", "", "", f.Note)
			}
			for _, l := range f.killLines(r.Delivery) {
				p("  %-26s %9s %8s %9s %8s %7s  (%s)", "", "", "", "", "", "", l)
			}
		}
	}
	var rss []string
	for k, v := range r.PeakRSSKiB {
		rss = append(rss, fmt.Sprintf("%s %.1f MiB", k, float64(v)/1024))
	}
	p("peak RSS    %s (%s)", strings.Join(rss, ", "), r.RSSFrom)
	for _, pr := range r.Problems {
		p("PROBLEM     %s", pr)
	}
	p("logs        %s", r.WorkDir)
	switch {
	case r.Pass && r.LossReported > 0:
		p("RESULT      REPORTED: %d readings lost with delivery=%s (-report-loss: measured, not failed)", r.LossReported, r.Delivery)
	case r.Pass:
		p("RESULT      PASS: 0 missing")
	default:
		p("RESULT      FAIL")
	}
}

func missingList(rs []tally.Range) string {
	if len(rs) == 0 {
		return ""
	}
	var parts []string
	for i, r := range rs {
		if i == 10 {
			parts = append(parts, fmt.Sprintf("... %d more ranges", len(rs)-10))
			break
		}
		if r.From == r.To {
			parts = append(parts, fmt.Sprint(r.From))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r.From, r.To))
		}
	}
	return "  seqs " + strings.Join(parts, ", ")
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// loadAvg is the first three fields of /proc/loadavg, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
