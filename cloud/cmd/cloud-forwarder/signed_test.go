package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// TestSignedConfirmationsRealBinaries runs the real edge-agent, with the
// forwarders' public key, against the real cloud-forwarder, over TLS to
// the broker and TLS + SASL to Kafka, through the rollout's steps:
//
//  1. a forwarder that does not sign yet (an old one): Kafka gets the
//     readings, the agent ignores the unsigned confirmations and keeps
//     every reading;
//  2. the forwarder restarted with its key, Kafka down: confirmations
//     covering every seq, unsigned, signed by another key, or signed with
//     the forwarder's own key for another device, published with the
//     forwarder's broker login, delete nothing;
//  3. Kafka back: the signing forwarder drains the agent, and every seq
//     the agent ever took is in Kafka or still in its buffer.
func TestSignedConfirmationsRealBinaries(t *testing.T) {
	const dev = "pi-signed"
	agentBin := testkit.BuildT(t, "github.com/edgepipe/sensorpipe/agent/cmd/edge-agent")[0]
	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	key, stranger := pki.NewConfirmKey(t), pki.NewConfirmKey(t)

	env := stack.Env(b, k, certs, "fwd-signed")
	env["FORWARDER_CONFIRM_INTERVAL"] = "100ms"
	old := spawn(t, env) // no FORWARDER_CONFIRM_KEY_FILE: unsigned, as before the upgrade
	if !strings.Contains(old.log.String(), "FORWARDER_CONFIRM_KEY_FILE is not set") {
		t.Errorf("no start-up warning about unsigned confirmations:\n%s", old.log)
	}

	dir := t.TempDir()
	db := filepath.Join(dir, "buffer.db")
	status := testkit.FreeAddr(t)
	cfg := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf(`device_id: %s
sensors: [{name: sim-1, driver: sim, interval: 20ms}]
buffer: {path: %s}
mqtt: {url: %q, username: %s, ca_file: %s, delivery: kafka, confirm_timeout: 2s, confirm_keys_file: %s}
clock: {hold_unsynced: 0s}
status_listen: %s
log_format: json
`, dev, db, b.TLSURL(), stack.PubUser, certs.CAFile, key.PubFile, status)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(agentBin, "run", "--config", cfg)
	agent.Env = []string{"PATH=/usr/bin:/bin", "EDGE_AGENT_MQTT_PASSWORD=" + stack.PubPassword}
	var alog testkit.LogBuffer
	agent.Stdout, agent.Stderr = &alog, &alog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Wait() }()
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		<-agentDone
		if t.Failed() {
			t.Logf("edge-agent log:\n%s", &alog)
		}
	})
	m := func(name string) float64 { return testkit.Metric(status, name) }
	t0 := time.Now()

	// 1. An old forwarder: the readings reach Kafka, nothing is deleted.
	testkit.WaitFor(t, "unsigned confirmations to be refused", 20*time.Second, func() bool {
		return m(`edge_agent_bad_confirmations_total{reason="unsigned"}`) >= 3
	})
	if n := m("edge_agent_delivered_total"); n != 0 {
		t.Fatalf("the agent deleted %v readings on unsigned confirmations", n)
	}
	t.Logf("phase 1 done after %v", time.Since(t0))
	if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-old.done
	old.done <- nil

	// 2. The forwarder with its key, Kafka down, forgeries on the ack topic.
	k.Cut()
	env["FORWARDER_CONFIRM_KEY_FILE"] = key.KeyFile
	fwd := startCmd(t, "run", "FORWARDER_LISTEN", env) // not ready: Kafka is down
	published := m("edge_agent_published_total")
	testkit.WaitFor(t, "readings published while Kafka is down", 10*time.Second, func() bool {
		return m("edge_agent_published_total") >= published+50
	})
	forger := broker.NewPublisher(t, broker.PubOptions{URL: b.TLSURL(), TLS: certs.Client(),
		Username: stack.MQTTUser, Password: stack.MQTTPassword, ClientID: "forger"}) // the forwarder's login
	every := []confirm.Range{{First: 1, Last: confirm.MaxSeq}}
	forge := func(edit func(*confirm.Message)) []byte {
		m := confirm.Message{ForwarderID: "not-a-forwarder", Seqs: every}
		edit(&m)
		return confirm.Append(nil, &m)
	}
	unsignedBefore, badBefore := m(`edge_agent_bad_confirmations_total{reason="unsigned"}`), m(`edge_agent_bad_confirmations_total{reason="bad_signature"}`)
	forger.Publish(t, confirm.Topic("sensors", dev),
		forge(func(*confirm.Message) {}),
		forge(func(c *confirm.Message) { confirm.Sign(stranger.Signer, dev, c) }),
		forge(func(c *confirm.Message) { confirm.Sign(key.Signer, "pi-other", c) }),
	)
	testkit.WaitFor(t, "the forgeries to be counted", 10*time.Second, func() bool {
		return m(`edge_agent_bad_confirmations_total{reason="unsigned"}`) == unsignedBefore+1 &&
			m(`edge_agent_bad_confirmations_total{reason="bad_signature"}`) == badBefore+2
	})
	if n := m("edge_agent_delivered_total"); n != 0 {
		t.Fatalf("forged confirmations deleted %v readings", n)
	}
	if n := m("edge_agent_confirmed_total"); n != 0 {
		t.Fatalf("forged confirmations confirmed %v readings", n)
	}

	if hb, err := heartbeat.Decode([]byte(b.Retained(heartbeat.Topic("sensors", dev)))); err != nil || hb.ConfirmUnsigned {
		t.Errorf("heartbeat %+v (%v): an agent with keys says it accepts unsigned confirmations", hb, err)
	}

	// 3. Kafka back: the genuine, signed confirmations drain the agent.
	if strings.Contains(fwd.log.String(), "FORWARDER_CONFIRM_KEY_FILE is not set") {
		t.Error("a forwarder with a key warns about unsigned confirmations")
	}
	k.Restore()
	testkit.WaitFor(t, "the signing forwarder to confirm", 30*time.Second, func() bool {
		return m("edge_agent_delivered_total") >= 100 && m("edge_agent_buffer_readings") < 100
	})
	if n := m(`edge_agent_bad_confirmations_total{reason="bad_signature"}`); n != badBefore+2 {
		t.Errorf("%v confirmations did not verify; only the 2 forged ones should", n)
	}
	t.Logf("phase 3 done after %v", time.Since(t0))
	unsigned, bad := m(`edge_agent_bad_confirmations_total{reason="unsigned"}`), m(`edge_agent_bad_confirmations_total{reason="bad_signature"}`)
	if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-agentDone; err != nil {
		t.Fatalf("edge-agent exit: %v", err)
	}
	agentDone <- nil

	// Every seq is in Kafka or still in the buffer.
	have, st, err := testkit.BufferedSeqs(db)
	if err != nil {
		t.Fatal(err)
	}
	inBuffer := len(have)
	want := int(st.LastSeq - st.SeqFloor)
	for _, r := range k.ReadN(t, stack.Topic, want-inBuffer, 20*time.Second, time.Second) {
		rd, err := reading.Decode(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		have[rd.Seq] = true
	}
	var missing []string
	for s := st.SeqFloor + 1; s <= st.LastSeq; s++ {
		if !have[s] {
			missing = append(missing, strconv.FormatUint(s, 10))
		}
	}
	t.Logf("%d readings taken, %d still buffered, bad confirmations: unsigned %v, bad_signature %v", want, inBuffer, unsigned, bad)
	if len(missing) > 0 {
		t.Fatalf("%d readings neither in Kafka nor in the buffer, first %v", len(missing), missing[:min(10, len(missing))])
	}
}
