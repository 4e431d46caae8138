package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	cloudconfig "github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/proc"
)

// start runs bin as a child whose output goes to logPath. A demo that dies
// without stopping it has the kernel send it SIGTERM, so it does not linger.
func start(name, bin string, args, env []string, logPath string) (*proc.Proc, error) {
	p := &proc.Proc{Name: name, Argv: append([]string{bin}, args...), Env: env, LogPath: logPath, DeathSignal: syscall.SIGTERM}
	return p, p.Start()
}

// stop sends SIGTERM, kills after grace, and reports how the program ended.
func stop(p *proc.Proc, grace time.Duration) error {
	if err := p.Stop(grace); err != nil {
		return err
	}
	return p.ExitErr()
}

func agentConfig(o Options, dir, mqttAddr, confirmKeys string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "device_id: %s\nsensors:\n", o.DeviceID)
	for i := 1; i <= o.Sensors; i++ {
		fmt.Fprintf(&b, "  - {name: sim-%d, driver: sim, interval: %s}\n", i, o.Interval)
	}
	fmt.Fprintf(&b, "buffer:\n  path: %s\n", filepath.Join(dir, "buffer.db"))
	fmt.Fprintf(&b, "mqtt:\n  url: tcp://%s\n  confirm_keys_file: %s\n", mqttAddr, confirmKeys)
	// A laptop or container whose clock the kernel never reports synced
	// would otherwise hold every reading for 10 minutes.
	b.WriteString("clock:\n  hold_unsynced: 0s\n")
	fmt.Fprintf(&b, "status_listen: 127.0.0.1:0\nlog_format: text\n")
	return b.String()
}

// Demo runs the pipeline until ctx ends or o.Duration passes, printing
// readings to out, and returns the tally.
func Demo(ctx context.Context, o Options, out io.Writer) (*Summary, error) {
	for _, b := range []string{"edge-agent", "cloud-forwarder"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%s/%s not found: run `make build` first: %w", o.BinDir, b, err)
		}
	}
	dir, err := os.MkdirTemp("", "sensorpipe-demo-")
	if err != nil {
		return nil, err
	}
	mq, err := broker.Start(broker.Options{})
	if err != nil {
		return nil, err
	}
	defer mq.Stop()
	mqttAddr := mq.Addr
	kc, err := kafka.Start(kafka.Options{Topics: map[string]int32{o.Topic: 3, o.Topic + ".dlq": 3, cloudconfig.DefaultStatusTopic: 3},
		TopicConfigs: map[string]map[string]string{cloudconfig.DefaultStatusTopic: {"cleanup.policy": "compact"}}})
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	defer kc.Close()
	kafkaAddr := kc.Addr
	fmt.Fprintf(out, "demo: MQTT broker on %s, Kafka on %s, logs and buffer in %s\n", mqttAddr, kafkaAddr, dir)

	// A confirmation key pair, as openssl would write it: the forwarder
	// signs confirmations, the agent deletes only on signed ones.
	keys, err := pki.WriteConfirmKey(dir)
	if err != nil {
		return nil, fmt.Errorf("confirmation key: %w", err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(agentConfig(o, dir, mqttAddr, keys.PubFile)), 0o644); err != nil {
		return nil, err
	}
	fwdListen, err := testkit.PickAddr()
	if err != nil {
		return nil, err
	}
	fwd, err := start("cloud-forwarder", filepath.Join(o.BinDir, "cloud-forwarder"), []string{"run"}, []string{
		"HIVEMQ_URL=tcp://" + mqttAddr,
		"KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
		"CONFLUENT_BOOTSTRAP_SERVER_SASL=" + kafkaAddr,
		"KAFKA_TOPIC=" + o.Topic,
		"FORWARDER_ID=demo-forwarder",
		"FORWARDER_LISTEN=" + fwdListen,
		"FORWARDER_CONFIRM_KEY_FILE=" + keys.KeyFile,
	}, filepath.Join(dir, "cloud-forwarder.log"))
	if err != nil {
		return nil, err
	}
	defer stop(fwd, 10*time.Second) //nolint:errcheck // stopped explicitly below; this is the error path
	// The agent deletes a reading at the broker's PUBACK (delivery: broker),
	// and a broker drops what it receives before anyone has subscribed: the
	// agent starts only once the forwarder's subscription is in place.
	if err := waitReady(ctx, "http://"+fwdListen+"/readyz", fwd.Done(), 30*time.Second); err != nil {
		return nil, fmt.Errorf("cloud-forwarder: %w (log: %s)", err, filepath.Join(dir, "cloud-forwarder.log"))
	}
	agent, err := start("edge-agent", filepath.Join(o.BinDir, "edge-agent"), []string{"run", "--config", cfg},
		nil, filepath.Join(dir, "edge-agent.log"))
	if err != nil {
		return nil, err
	}
	defer stop(agent, 10*time.Second) //nolint:errcheck // as above
	var db *database
	if !o.NoDB {
		if db, err = startDatabase(ctx, o, dir, kafkaAddr, out); err != nil {
			return nil, err
		}
		if db != nil {
			defer db.close() //nolint:errcheck // closed explicitly below; this is the error path
		}
	}
	fmt.Fprintf(out, "demo: %d simulated sensors every %v -> edge-agent -> MQTT -> cloud-forwarder -> Kafka topic %s; Ctrl-C stops\n",
		o.Sensors, o.Interval, o.Topic)

	// The fleet view: the demo's Pi as `cloud-forwarder fleet status` shows
	// it, from the database the sink fills, else from the broker.
	fleetEnv := []string{"FLEET_MQTT_URL=tcp://" + mqttAddr}
	if db != nil {
		fleetEnv = []string{"DATABASE_URL=" + db.url}
	}
	out = &lockedWriter{w: out}
	var fleetWG sync.WaitGroup
	fleetWG.Add(1)
	fleetCtx, stopFleet := context.WithCancel(ctx)
	go func() {
		defer fleetWG.Done()
		if err := fleetView(fleetCtx, filepath.Join(o.BinDir, "cloud-forwarder"), fleetEnv, o.DeviceID, 30*time.Second, out); err != nil && fleetCtx.Err() == nil {
			fmt.Fprintf(out, "demo: fleet view: %v\n", err)
		}
	}()
	defer func() { stopFleet(); fleetWG.Wait() }()

	sum := newSummary()
	consumer, err := kgo.NewClient(kgo.SeedBrokers(kafkaAddr), kgo.ConsumeTopics(o.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	cctx, cancelConsume := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		consume(cctx, consumer, sum, o.Quiet, out)
	}()
	defer func() { cancelConsume(); consumer.Close(); wg.Wait() }()

	var timeout <-chan time.Time
	if o.Duration > 0 {
		timeout = time.After(o.Duration)
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\ndemo: stopping")
	case <-timeout:
	case <-agent.Done():
		return sum.Finish(), agent.ExitErr()
	case <-fwd.Done():
		return sum.Finish(), fwd.ExitErr()
	case <-dbDone(db):
		return sum.Finish(), db.sink.ExitErr()
	}

	// Stop taking readings, then let the forwarder drain what the agent
	// published; what the agent had not yet published stays in its buffer.
	if err := stop(agent, 15*time.Second); err != nil {
		return sum.Finish(), err
	}
	buffered, st, err := testkit.BufferedSeqs(filepath.Join(dir, "buffer.db"))
	if err != nil {
		return sum.Finish(), err
	}
	sum.SetProduced(st.SeqFloor, st.LastSeq, buffered)
	deadline := time.Now().Add(15 * time.Second)
	for sum.Outstanding() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	ferr := stop(fwd, 15*time.Second)
	res := sum.Finish()
	if db != nil {
		n, err := db.waitRows(context.WithoutCancel(ctx), res.Delivered, 15*time.Second)
		if err != nil {
			return res, fmt.Errorf("count the rows in PostgreSQL: %w", err)
		}
		res.SetDB(n)
		ferr = errors.Join(ferr, db.close())
	}
	if res.Missing == 0 && res.DBMissing == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(out, "demo: kept %s for inspection\n", dir)
	}
	return res, ferr
}

// waitReady polls url until it answers 200, the program ends (done) or d passes.
func waitReady(ctx context.Context, url string, done <-chan struct{}, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return errors.New("exited before it was ready")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dbDone is the sink's exit channel, or nil (never ready) without a database.
func dbDone(db *database) <-chan struct{} {
	if db == nil {
		return nil
	}
	return db.sink.Done()
}

func consume(ctx context.Context, cl *kgo.Client, sum *Summary, quiet bool, out io.Writer) {
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachRecord(func(rec *kgo.Record) {
			r, err := reading.Decode(rec.Value)
			if err != nil {
				sum.Bad()
				fmt.Fprintf(out, "demo: undecodable record at %s/%d@%d: %v\n", rec.Topic, rec.Partition, rec.Offset, err)
				return
			}
			dup := sum.Add(r.DeviceID, r.Seq)
			if !quiet {
				printReading(out, &r, rec, dup)
			}
		})
	}
}

func printReading(out io.Writer, r *reading.Reading, rec *kgo.Record, dup bool) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s/%-6s seq=%-5d", r.TS.Local().Format("15:04:05.000"), r.DeviceID, r.Sensor, r.Seq)
	for _, k := range []struct{ key, unit string }{
		{reading.Temperature, "°C"}, {reading.Humidity, "%"}, {reading.Pressure, "hPa"},
	} {
		if v, ok := r.Values[k.key]; ok {
			fmt.Fprintf(&b, "  %7.2f %s", v, k.unit)
		}
	}
	fmt.Fprintf(&b, "   kafka %s/%d@%d", rec.Topic, rec.Partition, rec.Offset)
	if dup {
		b.WriteString("  (duplicate)")
	}
	fmt.Fprintln(out, b.String())
}
