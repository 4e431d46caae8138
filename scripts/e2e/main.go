// Command e2e is the pipeline's proof harness: it runs the real edge-agent
// and cloud-forwarder binaries against mosquitto (TLS, password file) and a
// Kafka-protocol server (kfake, TLS, SASL PLAIN), breaks things the way the
// field does, then reads the whole Kafka topic with franz-go's kgo and
// reports what was produced, delivered, missing and duplicated, the
// end-to-end latency and how long each fault took to recover from. It exits
// 1 if any reading is missing, or if a forwarder killed mid-drain sent back
// through the broker more duplicates than its in-flight window.
//
//	go run ./scripts/e2e -bin bin               # fault run (make e2e)
//	go run ./scripts/e2e -faults=false -rate 500 # throughput run (make bench)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// options are the harness's flags.
type options struct {
	binDir     string
	faults     bool
	rate       float64
	duration   time.Duration
	drain      time.Duration
	forwarders int
	keepalive  time.Duration
	cut        time.Duration
	kafkaDown  time.Duration
	fwdDown    time.Duration
	killWindow int
	killRTT    time.Duration
	fill       time.Duration
	delivery   string
	queue      int
	confirmTO  time.Duration
	only       map[string]bool
	fleet      int
	fleetCfg   bool
	fleetUpd   bool
	fleetKill  int
	fleetHB    time.Duration
	noDB       bool
	lossOK     bool
	warmup     time.Duration
	settle     time.Duration
	timeout    time.Duration
	timeBin    string
	workDir    string
	keep       bool
	jsonOut    string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("e2e", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.binDir, "bin", "bin", "directory holding the built edge-agent and cloud-forwarder")
	fs.BoolVar(&o.faults, "faults", true, "inject the faults (false: a throughput run)")
	fs.Float64Var(&o.rate, "rate", 200, "readings per second the agent takes (spread over >= 4 sim sensors, each at most 100/s)")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "throughput run: how long to run at -rate")
	fs.DurationVar(&o.drain, "drain", 20*time.Second, "throughput run: then cut the broker link this long and time the backlog drain (0: skip)")
	fs.IntVar(&o.forwarders, "forwarders", 2, "cloud-forwarder replicas in the share group")
	fs.DurationVar(&o.keepalive, "keepalive", 5*time.Second, "the agent's mqtt.keepalive (bounds how fast it sees a silent cut)")
	fs.DurationVar(&o.cut, "cut", 20*time.Second, "how long the agent<->broker link is black-holed")
	fs.DurationVar(&o.kafkaDown, "kafka-down", 60*time.Second, "how long Kafka is unreachable")
	fs.DurationVar(&o.fwdDown, "forwarders-down", 60*time.Second, "how long every forwarder is stopped")
	fs.IntVar(&o.killWindow, "kill-window", 200, "forwarder-kill-mid-drain: FORWARDER_MAX_IN_FLIGHT of the forwarder it kills (0: the shipped default); "+
		"the backlog it builds is 2.5 windows per forwarder, within what the broker queues for an offline session (-broker-queue)")
	fs.DurationVar(&o.killRTT, "kill-rtt", 100*time.Millisecond, "forwarder-kill-mid-drain: Kafka's round trip while the forwarders drain, until the kill")
	fs.StringVar(&o.delivery, "delivery", "kafka", "the agent's mqtt.delivery: kafka (delete on the forwarder's confirmation) or broker (delete at PUBACK)")
	fs.IntVar(&o.queue, "broker-queue", 1000, "mosquitto max_queued_messages per session, as real brokers cap it (HiveMQ, EMQX: 1000)")
	fs.DurationVar(&o.confirmTO, "confirm-timeout", 15*time.Second, "the agent's mqtt.confirm_timeout (default 60s; shorter here so re-sends fit the run)")
	fs.IntVar(&o.fleet, "fleet", 0, "fleet run: this many simulated devices (4 sensors at 1 Hz each) in this process instead of the edge-agent; measures broker messages and forwarder CPU per reading")
	fs.BoolVar(&o.fleetCfg, "fleet-config", false, "fleet run: every device runs the agent's remote config on the fleet topic; after the window, `cloud-forwarder fleet config push --fleet` doubles every sensor interval, and the run times how long until every device applied it")
	fs.BoolVar(&o.fleetUpd, "fleet-update", false, "fleet run: every device takes over-the-air offers (release.Decide, a simulated installer); "+
		"`cloud-forwarder fleet update` rolls 1.6.0 out at 10 % then 100 % (timed until all committed), then 1.7.0, which fails on 30 % of the canaries, until `fleet update status` aborts it")
	fs.IntVar(&o.fleetKill, "fleet-kill", 10, "fleet run: after the window (and the config change), kill this many devices (half lose their connection, half hang) "+
		"and time until `cloud-forwarder fleet status` and the Fleet dashboard's query list exactly them as not reporting; they come back before the drain (0: skip)")
	fs.DurationVar(&o.fleetHB, "fleet-status-interval", 2*time.Second, "fleet run: the simulated devices' status_interval (the agent's default is 60s; short so the kill phase takes seconds)")
	fs.BoolVar(&o.noDB, "no-db", false, "skip the database step (cloud-forwarder sink into PostgreSQL) even when a server is installed")
	only := fs.String("only", "", "comma-separated fault names to inject (default: all)")
	fs.BoolVar(&o.lossOK, "report-loss", false, "report missing readings without failing (to measure what delivery=broker loses)")
	fs.DurationVar(&o.warmup, "warmup", 15*time.Second, "fault run: undisturbed running before the first fault (the calm latency sample)")
	fs.DurationVar(&o.fill, "fill", 40*time.Second, "how long the agent buffers before the full-buffer restart")
	fs.DurationVar(&o.settle, "settle", 90*time.Second, "how long to wait for the pipeline to catch up after a fault")
	fs.DurationVar(&o.timeout, "timeout", 9*time.Minute, "give up after this long")
	defTime := "/usr/bin/time"
	if _, err := os.Stat(defTime); err != nil {
		defTime = ""
	}
	fs.StringVar(&o.timeBin, "time", defTime, "GNU time, to measure peak RSS with time -v (empty: no RSS figures)")
	fs.StringVar(&o.workDir, "workdir", "", "where to put certs, configs, buffer and logs (default: a new temp dir)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work dir even when the run passes")
	fs.StringVar(&o.jsonOut, "json", "", "also write the report as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.rate <= 0 || o.forwarders < 1 {
		return o, errors.New("-rate must be positive and -forwarders at least 1")
	}
	if o.killWindow < 0 || o.killRTT < 0 {
		return o, errors.New("-kill-window must be 0 (the forwarder's default) or positive, -kill-rtt not negative")
	}
	if o.fleet > 0 && (o.fleetKill < 0 || 2*o.fleetKill > o.fleet || o.fleetHB < time.Second) {
		return o, errors.New("-fleet-kill must be 0 to half of -fleet, and -fleet-status-interval at least 1s")
	}
	if o.delivery != "kafka" && o.delivery != "broker" {
		return o, fmt.Errorf("-delivery %q: want kafka or broker", o.delivery)
	}
	if *only != "" {
		o.only = map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			o.only[strings.TrimSpace(n)] = true
		}
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	interrupted := ctx
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("at", "e2e")
	dir := o.workDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "sensorpipe-e2e-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s := &stack{opts: o, log: log, dir: dir}
	defer s.close()
	started, loadStart := time.Now(), loadAvg()
	log.Info("starting", "workdir", dir)
	if err := s.start(ctx); err != nil {
		return fmt.Errorf("start the pipeline (logs in %s): %w", dir, err)
	}
	if o.fleet > 0 {
		return fleetRun(ctx, s, stdout)
	}
	in := &injector{s: s}
	var runErr error
	var drain *fault
	if o.faults {
		if err := in.sleep(ctx, o.warmup); err != nil {
			return err
		}
		runErr = in.run(ctx)
	} else {
		drain, runErr = throughputRun(ctx, s, in)
	}
	if interrupted.Err() != nil {
		return fmt.Errorf("interrupted; logs in %s", dir)
	}
	rep := finish(ctx, s, in, drain, runErr, started)
	rep.LoadStart, rep.LoadEnd = loadStart, loadAvg()
	removeDir := rep.Pass && !o.keep && o.workDir == ""
	if removeDir {
		rep.WorkDir += " (removed: the run passed; -keep keeps it)"
	}
	rep.text(stdout)
	if o.jsonOut != "" {
		if err := rep.writeJSON(o.jsonOut); err != nil {
			return err
		}
	}
	if !rep.Pass {
		return fmt.Errorf("FAIL: %d missing, %d problems (logs kept in %s)", rep.Missing, len(rep.Problems), dir)
	}
	if removeDir {
		s.close()
		os.RemoveAll(dir)
	}
	return nil
}

// throughputRun runs at the offered rate for the duration, then times the
// drain of a backlog built by cutting the broker link.
func throughputRun(ctx context.Context, s *stack, in *injector) (*fault, error) {
	s.log.Info("throughput run", "rate", s.opts.rate, "duration", s.opts.duration)
	if err := in.sleep(ctx, s.opts.duration); err != nil {
		return nil, err
	}
	if s.opts.drain <= 0 {
		return nil, s.checkAlive()
	}
	f := in.begin("backlog-drain", fmt.Sprintf("broker link refused for %v, then restored: time to drain the backlog", s.opts.drain))
	s.link.SetMode(tcpproxy.Refuse)
	if err := in.sleep(ctx, s.opts.drain); err != nil {
		return nil, err
	}
	s.link.SetMode(tcpproxy.Pass)
	f.End = time.Now()
	err := in.settle(ctx)
	d := in.faults[len(in.faults)-1]
	in.faults = in.faults[:len(in.faults)-1] // reported as the drain, not as a fault
	return &d, err
}
