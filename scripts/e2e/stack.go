package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
	cloudconfig "github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/scripts/e2e/internal/topicread"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/proc"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

const (
	deviceID   = "e2e-pi-1"
	topic      = "sensor-readings"
	partitions = 3
	kafkaUser  = "e2e-api-key"
	kafkaPass  = "e2e-api-secret"
	agentUser  = "e2e-pi-1"
	agentPass  = "agent-pw-e2e"
	fwdPass    = "forwarder-pw-e2e" // every forwarder's; each has its own login
	// The operator and monitoring logins are in the broker's table as in
	// production; the run itself does not use them.
	operatorUser = "e2e-operator"
	operatorPass = "operator-pw-e2e"
	monitorUser  = "e2e-monitor"
	monitorPass  = "monitor-pw-e2e"
	shareGroup   = "e2e"
)

// stack is the whole pipeline under test and the harness's taps into it.
type stack struct {
	opts   options
	log    *slog.Logger
	dir    string
	certs  *pki.PKI
	keys   *pki.ConfirmKey // confirmation key pair: the forwarders sign, the agent verifies
	mosq   *proc.Proc
	mqtt   string          // mosquitto's own address
	link   *tcpproxy.Proxy // agent -> mosquitto
	kafka  *kafka.Cluster
	agent  *proc.Proc
	status string // agent status_listen
	// fwdListen are the forwarders' status addresses, in the order of fwds.
	fwdListen []string
	floor     uint64 // the agent's buffer's seq floor: its first seq is floor+1
	bufDB     string
	cfg       string // agent config path
	fwds      []*proc.Proc
	reader    topicread.Config
	tr        *tracker
	sink      *sinkStage         // nil without PostgreSQL
	dbNote    string             // what the database step is, or why it was skipped
	stop      context.CancelFunc // stops the live reader
	done      chan struct{}
}

// sensorPlan spreads rate readings/s over at least 4 sim sensors, each
// polling no faster than every 20 ms: the config allows 10 ms, but at that
// pace one sensor's poll loop misses ticks on a busy machine, and the run
// would offer less than asked.
func sensorPlan(rate float64) (n int, interval time.Duration) {
	n = max(4, int(math.Ceil(rate/50)))
	interval = time.Duration(float64(n) / rate * float64(time.Second)).Round(time.Millisecond)
	return n, max(interval, 20*time.Millisecond)
}

func (s *stack) bin(name string) string { return filepath.Join(s.opts.binDir, name) }

// start brings up mosquitto, kfake, the agent and the forwarders, and the
// live reader, and waits for the first reading to reach Kafka.
func (s *stack) start(ctx context.Context) error {
	for _, b := range []string{"edge-agent", "cloud-forwarder"} {
		if _, err := os.Stat(s.bin(b)); err != nil {
			return fmt.Errorf("%s not built (run make build): %w", s.bin(b), err)
		}
	}
	var err error
	if s.certs, err = pki.Write(s.dir); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	// The forwarders sign confirmations; the agent has the public key.
	if s.keys, err = pki.WriteConfirmKey(s.dir); err != nil {
		return fmt.Errorf("confirmation key: %w", err)
	}
	if err := s.startMosquitto(ctx); err != nil {
		return err
	}
	if s.link, err = tcpproxy.Listen("127.0.0.1:0", s.mqtt); err != nil {
		return err
	}
	if err := s.startKafka(ctx); err != nil {
		return err
	}
	if err := s.writeAgentConfig(); err != nil {
		return err
	}
	if err := s.startForwarders(ctx); err != nil {
		return err
	}
	// The fleet run reads the devices' heartbeats from the database too
	// (fleet status, the Fleet dashboard's query).
	if s.dbNote, err = s.startSink(ctx); err != nil {
		return fmt.Errorf("database step: %w", err)
	}
	if s.opts.fleet > 0 {
		return nil // the fleet run brings its own devices
	}
	s.agent = &proc.Proc{Name: "edge-agent", Argv: []string{s.bin("edge-agent"), "run", "--config", s.cfg},
		LogPath: filepath.Join(s.dir, "edge-agent.log"), TimeBin: s.opts.timeBin}
	if err := s.startAgent(ctx); err != nil {
		return err
	}
	// A fresh buffer's seqs start above its floor (Unix microseconds),
	// not at 1: ask the running agent where.
	st, err := s.waitBufferStats(ctx, 30*time.Second)
	if err != nil {
		return fmt.Errorf("agent buffer stats: %w\n%s", err, s.diagnose())
	}
	s.floor = st.SeqFloor
	s.tr.setFloor(st.SeqFloor)
	s.log.Info("pipeline up, waiting for the first reading in Kafka", "seq_floor", st.SeqFloor)
	if err := s.tr.waitSeq(ctx, st.SeqFloor+1, 60*time.Second); err != nil {
		return fmt.Errorf("no reading reached Kafka: %w\n%s", err, s.diagnose())
	}
	return nil
}

func (s *stack) startMosquitto(ctx context.Context) error {
	var err error
	if s.mqtt, err = testkit.PickAddr(); err != nil {
		return err
	}
	s.mosq, err = newMosquitto(s.dir, s.mqtt, s.certs, s.logins(), s.opts.queue)
	if err != nil {
		return err
	}
	return s.startBroker(ctx)
}

// logins are the broker's accounts, each with its role in the shipped
// permission table (brokerauth): the agent, each forwarder (user name =
// its FORWARDER_ID), an operator and a monitoring login, the logins the
// intruders fault tries the table with, and the fleet run's devices.
func (s *stack) logins() []brokerauth.Login {
	l := []brokerauth.Login{
		{Name: agentUser, Role: brokerauth.Device, Password: agentPass},
		{Name: operatorUser, Role: brokerauth.Operator, Password: operatorPass},
		{Name: monitorUser, Role: brokerauth.Monitor, Password: monitorPass},
		{Name: rogueUser, Role: brokerauth.Device, Password: roguePass},
	}
	for i := range s.opts.forwarders {
		l = append(l, brokerauth.Login{Name: forwarderID(i), Role: brokerauth.Forwarder, Password: fwdPass})
	}
	for _, g := range ghostUsers() {
		l = append(l, brokerauth.Login{Name: g, Role: brokerauth.Device, Password: roguePass})
	}
	for i := range s.opts.fleet {
		l = append(l, brokerauth.Login{Name: fleetDevice(i), Role: brokerauth.Device, Password: fleetPass})
	}
	return l
}

// forwarderID is the i-th forwarder's FORWARDER_ID and broker login.
func forwarderID(i int) string { return fmt.Sprintf("e2e-fwd-%c", 'a'+i) }

func (s *stack) startBroker(ctx context.Context) error {
	if err := s.mosq.Start(); err != nil {
		return err
	}
	return proc.WaitListening(ctx, s.mosq, s.mqtt, 10*time.Second)
}

func (s *stack) startKafka(ctx context.Context) error {
	var err error
	s.kafka, err = kafka.Start(kafka.Options{PKI: s.certs, User: kafkaUser, Password: kafkaPass,
		Topics: map[string]int32{topic: partitions, topic + ".dlq": partitions, cloudconfig.DefaultStatusTopic: 2}, Proxy: true,
		TopicConfigs: map[string]map[string]string{cloudconfig.DefaultStatusTopic: {"cleanup.policy": "compact"}}})
	if err != nil {
		return err
	}
	s.reader = topicread.Config{Bootstrap: s.kafka.Addr, TLS: s.certs.Client(), User: kafkaUser, Password: kafkaPass,
		Topic: topic, Partitions: partitions, Redirect: map[string]string{s.kafka.Addr: s.kafka.DirectAddr()}}
	s.tr = newTracker(deviceID)
	rctx, cancel := context.WithCancel(ctx)
	s.stop, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		if err := topicread.Follow(rctx, s.reader, s.tr.add); err != nil {
			s.log.Error("live reader", "err", err)
		}
	}()
	return nil
}

func (s *stack) writeAgentConfig() error {
	var err error
	if s.status, err = testkit.PickAddr(); err != nil {
		return err
	}
	s.bufDB = filepath.Join(s.dir, "agent", "buffer.db")
	pwFile := filepath.Join(s.dir, "agent-mqtt-password")
	if err := os.WriteFile(pwFile, []byte(agentPass+"\n"), 0o600); err != nil {
		return err
	}
	n, interval := sensorPlan(s.opts.rate)
	var b strings.Builder
	fmt.Fprintf(&b, "device_id: %s\nsensors:\n", deviceID)
	for i := range n {
		fmt.Fprintf(&b, "  - {name: sim-%d, driver: sim, interval: %v, seed: %d}\n", i, interval, i+1)
	}
	fmt.Fprintf(&b, "buffer:\n  path: %s\n  max_bytes: 512MiB\n", s.bufDB)
	// The host's clock may never report synced (a container): without
	// this every reading would wait clock.hold_unsynced (10m) for NTP.
	b.WriteString("clock:\n  hold_unsynced: 0s\n")
	fmt.Fprintf(&b, "mqtt:\n  url: ssl://%s\n  username: %s\n  password_file: %s\n  ca_file: %s\n  keepalive: %v\n",
		s.link.Addr(), agentUser, pwFile, s.certs.CAFile, s.opts.keepalive)
	fmt.Fprintf(&b, "  delivery: %s\n  confirm_timeout: %v\n", s.opts.delivery, s.opts.confirmTO)
	if s.opts.delivery == "kafka" {
		fmt.Fprintf(&b, "  confirm_keys_file: %s\n", s.keys.PubFile)
	}
	fmt.Fprintf(&b, "status_listen: %s\nlog_format: text\n", s.status)
	s.cfg = filepath.Join(s.dir, "agent.yaml")
	return os.WriteFile(s.cfg, []byte(b.String()), 0o644)
}

func (s *stack) startAgent(ctx context.Context) error {
	if err := s.agent.Start(); err != nil {
		return err
	}
	return proc.WaitListening(ctx, s.agent, s.status, 20*time.Second)
}

func (s *stack) startForwarders(ctx context.Context) error {
	for i := range s.opts.forwarders {
		listen, err := testkit.PickAddr()
		if err != nil {
			return err
		}
		id := forwarderID(i)
		p := &proc.Proc{
			Name: id, Argv: []string{s.bin("cloud-forwarder"), "run"},
			LogPath: filepath.Join(s.dir, id+".log"), TimeBin: s.opts.timeBin,
			Env: []string{
				"HIVEMQ_URL=ssl://" + s.mqtt,
				"HIVEMQ_USERNAME=" + id,
				"HIVEMQ_PASSWORD=" + fwdPass,
				"HIVEMQ_CA_FILE=" + s.certs.CAFile,
				"FORWARDER_ID=" + id,
				"FORWARDER_SHARE_GROUP=" + shareGroup,
				"FORWARDER_LISTEN=" + listen,
				"CONFLUENT_BOOTSTRAP_SERVER_SASL=" + s.kafka.Addr,
				"CONFLUENT_API_KEY=" + kafkaUser,
				"CONFLUENT_API_SECRET=" + kafkaPass,
				"KAFKA_SECURITY_PROTOCOL=SASL_SSL",
				"KAFKA_CA_FILE=" + s.certs.CAFile,
				"KAFKA_TOPIC=" + topic,
				"FORWARDER_CONFIRM_KEY_FILE=" + s.keys.KeyFile,
			},
		}
		if s.opts.delivery == "broker" {
			// No device listens for confirmations: do not send them.
			p.Env = append(p.Env, "FORWARDER_CONFIRM=false")
		}
		s.fwds = append(s.fwds, p)
		s.fwdListen = append(s.fwdListen, listen)
		if err := p.Start(); err != nil {
			return err
		}
		if err := proc.WaitListening(ctx, p, listen, 20*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// checkAlive fails if a program died without the harness killing it.
func (s *stack) checkAlive() error {
	var errs []error
	for _, p := range append(append([]*proc.Proc{s.mosq, s.agent}, s.fwds...), s.sinkProcs()...) {
		if p != nil && !p.Running() {
			errs = append(errs, fmt.Errorf("%s exited unexpectedly (%s); last lines of %s:\n%s",
				p.Name, p.ExitStatus(), p.LogPath, p.LogTail(15)))
		}
	}
	return errors.Join(errs...)
}

// diagnose gathers the last log lines of every program, for a failure message.
func (s *stack) diagnose() string {
	var b strings.Builder
	for _, p := range append(append([]*proc.Proc{s.mosq, s.agent}, s.fwds...), s.sinkProcs()...) {
		if p == nil {
			continue
		}
		state := "running"
		if !p.Running() {
			state = p.ExitStatus()
		}
		fmt.Fprintf(&b, "--- %s (%s), last lines of %s:\n%s\n", p.Name, state, p.LogPath, p.LogTail(10))
	}
	broker := &proc.Proc{LogPath: brokerLog(s.dir)}
	fmt.Fprintf(&b, "--- broker log %s:\n%s\n", broker.LogPath, broker.LogTail(10))
	return b.String()
}

// bufferStats is what `edge-agent buffer stats --json` prints (the buffer
// package's Stats).
type bufferStats struct {
	Count        uint64 `json:"count"`
	OldestSeq    uint64 `json:"oldest_seq"`
	NewestSeq    uint64 `json:"newest_seq"`
	LastSeq      uint64 `json:"last_seq"`
	SeqFloor     uint64 `json:"seq_floor"`
	DroppedBytes uint64 `json:"dropped_bytes"`
	DroppedAge   uint64 `json:"dropped_age"`
}

// waitBufferStats retries readBufferStats until the agent answers.
func (s *stack) waitBufferStats(ctx context.Context, d time.Duration) (bufferStats, error) {
	deadline := time.Now().Add(d)
	for {
		st, err := s.readBufferStats(ctx)
		if err == nil || time.Now().After(deadline) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// readBufferStats runs the agent's own CLI on the agent's buffer: on the
// file when the agent is stopped, through its status endpoint while it runs.
func (s *stack) readBufferStats(ctx context.Context) (bufferStats, error) {
	var st bufferStats
	cmd := exec.CommandContext(ctx, s.bin("edge-agent"), "buffer", "stats", "--db", s.bufDB, "--status", s.status, "--json")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return st, fmt.Errorf("edge-agent buffer stats: %w: %s", err, ee.Stderr)
		}
		return st, fmt.Errorf("edge-agent buffer stats: %w", err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("edge-agent buffer stats --json: %w: %q", err, out)
	}
	if st.LastSeq == 0 {
		st.LastSeq = st.NewestSeq
	}
	return st, nil
}

// readBufferSeqs lists the seqs the stopped agent's buffer holds, with its
// own CLI (`edge-agent buffer export`, one JSON reading per line).
func (s *stack) readBufferSeqs(ctx context.Context) ([]uint64, error) {
	cmd := exec.CommandContext(ctx, s.bin("edge-agent"), "buffer", "export", "--db", s.bufDB)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("edge-agent buffer export: %w", err)
	}
	var seqs []uint64
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		r, err := reading.Decode(line)
		if err != nil {
			return seqs, fmt.Errorf("edge-agent buffer export: %w: %q", err, line)
		}
		seqs = append(seqs, r.Seq)
	}
	return seqs, nil
}

// close stops everything still running.
func (s *stack) close() {
	for _, p := range append([]*proc.Proc{s.agent, s.mosq}, s.fwds...) {
		if p != nil {
			p.Destroy()
		}
	}
	if s.sink != nil {
		s.sink.close()
	}
	if s.stop != nil {
		s.stop()
		<-s.done
	}
	if s.link != nil {
		s.link.Close()
	}
	if s.kafka != nil {
		s.kafka.Close()
	}
}

// sinkProcs is the sink's process, if the run has one.
func (s *stack) sinkProcs() []*proc.Proc {
	if s.sink == nil || s.sink.proc == nil {
		return nil
	}
	return []*proc.Proc{s.sink.proc}
}

// waitTopicCount waits until the topic holds at least n records.
func (s *stack) waitTopicCount(ctx context.Context, n uint64, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		ends, err := topicread.EndOffsets(ctx, s.reader, topic)
		var sum uint64
		for _, e := range ends {
			sum += uint64(e)
		}
		if err == nil && sum >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic holds %d records after %v, want at least %d (err %v)", sum, d, n, err)
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}
