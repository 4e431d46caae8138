// Command systemdota is the over-the-air part of scripts/test-systemd.sh.
// It runs inside the Debian container (systemd as PID 1, the host's
// network), as root, after edge-agent 1.0.0 was installed from its .deb,
// and drives the real agent through the update paths of docs/UPDATE.md
// under the real units (edge-agent.service, the update guard's timer):
//
//  1. refused, with the reason in the heartbeat and the agent's process
//     untouched: a manifest signed by another key, a wrong hash, a
//     truncated file, a downgrade, a disk without twice the size free;
//  2. 1.1.0 (the real agent) over the air: installed, restarted into,
//     committed;
//  3. 1.2.0 that crashes at start: rolled back to 1.1.0 by the launcher;
//  4. 1.3.0 that starts and never gets healthy: rolled back by the guard;
//  5. `dpkg -i` of the 2.0.0 .deb over the running agent: it supersedes
//     the over-the-air version and keeps the buffer;
//
// and counts every reading by (device_id, seq): each one published or
// still in the buffer. It writes its report to -report, ending in OTA-OK,
// and powers the container off.
//
//	systemdota -port 1883 -dir /root/ota
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/agent/update"
	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

const (
	device    = "nspawn-ota"
	group     = "nspawn"
	stateDir  = "/var/lib/edge-agent"
	updateDir = stateDir + "/update"
	bufPath   = stateDir + "/buffer.db"
	deadline  = 20 * time.Second
)

func main() {
	port := flag.Int("port", 0, "the host's mosquitto port on 127.0.0.1")
	dir := flag.String("dir", "/root/ota", "where the binaries and the .deb are")
	report := flag.String("report", "/root/ota/report.txt", "report file")
	poweroff := flag.Bool("poweroff", true, "power the container off at the end")
	flag.Parse()
	f, err := os.Create(*report)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	d := &driver{dir: *dir, port: *port, out: io.MultiWriter(f, os.Stderr), seqs: map[uint64]int{}, files: map[string][]byte{}}
	start := time.Now()
	err = d.run()
	if err != nil {
		d.say("FAIL: %v", err)
		d.dump()
	} else {
		d.say("OTA-OK in %s", time.Since(start).Round(time.Second))
	}
	f.Close()
	if *poweroff {
		_ = exec.Command("systemctl", "poweroff").Run()
	}
}

type driver struct {
	dir, url  string
	port      int
	out       io.Writer
	rel, flt  *sign.Signer
	other     *sign.Signer
	mq        mqtt.Client
	mu        sync.Mutex
	seqs      map[uint64]int // readings received, by seq
	hb        heartbeat.Heartbeat
	files     map[string][]byte // what the HTTPS server serves, by path
	agentSize int64
}

func (d *driver) say(format string, a ...any) { fmt.Fprintf(d.out, format+"\n", a...) }

func (d *driver) run() error {
	if err := d.setup(); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	for _, step := range []struct {
		name string
		fn   func() error
	}{
		{"refusals", d.refusals},
		{"update to 1.1.0", d.updateGood},
		{"1.2.0 crashes at start", d.crashing},
		{"1.3.0 never healthy", d.unhealthy},
		{"dpkg -i 2.0.0 over the running agent", d.debUpgrade},
		{"readings by (device_id, seq)", d.count},
	} {
		t0 := time.Now()
		if err := step.fn(); err != nil {
			return fmt.Errorf("%s: %w", step.name, err)
		}
		d.say("ok: %s (%s)", step.name, time.Since(t0).Round(100*time.Millisecond))
	}
	return nil
}

// setup makes the keys, the HTTPS server and the subscriber, and restarts
// the agent (1.0.0, from the .deb) with updates on.
func (d *driver) setup() error {
	var err error
	for _, k := range []**sign.Signer{&d.rel, &d.flt, &d.other} {
		if *k, err = sign.Generate(); err != nil {
			return err
		}
	}
	for name, pemb := range map[string][]byte{"release-keys.pem": d.rel.PublicPEM(), "fleet-keys.pem": d.flt.PublicPEM()} {
		if err := os.WriteFile("/etc/edge-agent/"+name, pemb, 0o644); err != nil {
			return err
		}
	}
	tlsDir := "/etc/edge-agent/ota-tls"
	if err := os.MkdirAll(tlsDir, 0o755); err != nil {
		return err
	}
	p, err := pki.Write(tlsDir)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(d.serve), TLSConfig: p.Server, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	d.url = "https://" + ln.Addr().String()

	// Stop the agent while the subscriber's session starts, so that every
	// reading from then on reaches it (delivery: broker deletes at PUBACK).
	if err := systemctl("stop", "edge-agent"); err != nil {
		return err
	}
	o := mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", d.port)).SetClientID("ota-driver").
		SetCleanSession(false).SetAutoReconnect(true) // in order: the last heartbeat is the last stage
	d.mq = mqtt.NewClient(o)
	if tok := d.mq.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("mqtt connect: %v", tok.Error())
	}
	subs := map[string]byte{"sensors/" + device + "/+/reading": 1, "sensors/" + device + "/status": 1}
	if tok := d.mq.SubscribeMultiple(subs, d.message); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("subscribe: %v", tok.Error())
	}
	cfg := fmt.Sprintf(`device_id: %s
sensors:
  - {name: sim-1, driver: sim, interval: 200ms}
mqtt: {url: "tcp://127.0.0.1:%d", delivery: broker}
clock: {hold_unsynced: 0s}
status_listen: ""
fleet: {keys_file: /etc/edge-agent/fleet-keys.pem, group: %s}
update: {keys_file: /etc/edge-agent/release-keys.pem, ca_file: %s, deadline: %s}
`, device, d.port, group, p.CAFile, deadline)
	if err := os.WriteFile("/etc/edge-agent/config.yaml", []byte(cfg), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("edge-agent", "config", "check", "--config", "/etc/edge-agent/config.yaml").CombinedOutput(); err != nil {
		return fmt.Errorf("config check: %v: %s", err, out)
	}
	if err := systemctl("start", "edge-agent"); err != nil {
		return err
	}
	if _, err = d.waitAgent("1.0.0", 60*time.Second); err != nil {
		return err
	}
	return d.moreReadings(10)
}

func (d *driver) serve(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	b, ok := d.files[r.URL.Path]
	d.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	http.ServeContent(w, r, "bin", time.Time{}, bytes.NewReader(b))
}

func (d *driver) message(_ mqtt.Client, m mqtt.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if strings.HasSuffix(m.Topic(), "/status") {
		var hb heartbeat.Heartbeat
		if json.Unmarshal(m.Payload(), &hb) == nil {
			d.hb = hb
		}
		return
	}
	if r, err := reading.Decode(m.Payload()); err == nil {
		d.seqs[r.Seq]++
	}
}

// offer serves content as version's binary (the server sends served, which
// may differ), signs its manifest with signer and publishes the offer.
func (d *driver) offer(version string, content, served []byte, signer *sign.Signer) error {
	if served == nil {
		served = content
	}
	path := "/edge-agent_" + version + "_" + release.RunningArch()
	d.mu.Lock()
	d.files[path] = served
	d.mu.Unlock()
	h := sha256.Sum256(content)
	m, err := release.SignManifest(release.Manifest{Version: version, Arch: release.RunningArch(), Size: int64(len(content)),
		SHA256: hex.EncodeToString(h[:]), URL: d.url + path}, signer)
	if err != nil {
		return err
	}
	p, err := release.SignOffer(release.Offer{Rollout: "r-" + version, Group: group, Version: version, Percent: 100,
		State: release.StateActive, Issued: time.Now(), Manifests: []json.RawMessage{m}}, d.flt)
	if err != nil {
		return err
	}
	if tok := d.mq.Publish(release.OfferTopic("sensors", group), 1, true, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("publish offer: %v", tok.Error())
	}
	return nil
}

// waitFor polls the last heartbeat until cond holds.
func (d *driver) waitFor(what string, timeout time.Duration, cond func(heartbeat.Heartbeat) bool) (heartbeat.Heartbeat, error) {
	end := time.Now().Add(timeout)
	for {
		d.mu.Lock()
		hb := d.hb
		d.mu.Unlock()
		if cond(hb) {
			return hb, nil
		}
		if time.Now().After(end) {
			b, _ := json.Marshal(hb.Update)
			return hb, fmt.Errorf("timeout after %v waiting for %s (last heartbeat: %s %s, update %s)", timeout, what, hb.State, hb.Agent, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitAgent waits for version online, and returns its main PID.
func (d *driver) waitAgent(version string, timeout time.Duration) (int, error) {
	if _, err := d.waitFor("agent "+version+" online", timeout, func(hb heartbeat.Heartbeat) bool {
		return hb.State == heartbeat.Online && hb.Agent == version
	}); err != nil {
		return 0, err
	}
	return mainPID()
}

// waitUpdate waits for the heartbeat's update stage state of version.
func (d *driver) waitUpdate(state, version string, timeout time.Duration) (heartbeat.Update, error) {
	hb, err := d.waitFor(state+" "+version, timeout, func(hb heartbeat.Heartbeat) bool {
		return hb.Update != nil && hb.Update.State == state && hb.Update.Version == version
	})
	if err != nil {
		return heartbeat.Update{}, err
	}
	return *hb.Update, nil
}

func (d *driver) refusals() error {
	agent, err := os.ReadFile(filepath.Join(d.dir, "edge-agent-1.1.0"))
	if err != nil {
		return err
	}
	d.agentSize = int64(len(agent))
	pid, err := mainPID()
	if err != nil {
		return err
	}
	wrong := bytes.Clone(agent)
	wrong[len(wrong)/2] ^= 0xff
	cases := []struct {
		name, version string
		served        []byte
		signer        *sign.Signer
		want          string
		setup         func() (func(), error)
	}{
		{name: "manifest signed by another key", version: "1.1.0", signer: d.other, want: "signature"},
		{name: "wrong hash", version: "1.1.1", served: wrong, want: "sha256"},
		{name: "truncated file", version: "1.1.2", served: agent[:len(agent)/3], want: "truncated"},
		{name: "downgrade", version: "0.9.0", want: "not newer"},
		{name: "full disk", version: "1.1.3", want: "free space", setup: d.fillDisk},
	}
	for _, c := range cases {
		undo := func() {}
		if c.setup != nil {
			if undo, err = c.setup(); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
		}
		signer := c.signer
		if signer == nil {
			signer = d.rel
		}
		t0 := time.Now()
		if err := d.offer(c.version, agent, c.served, signer); err != nil {
			return err
		}
		u, err := d.waitUpdate(heartbeat.UpdateRefused, c.version, 60*time.Second)
		undo()
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		if !strings.Contains(u.Error, c.want) {
			return fmt.Errorf("%s: refused for %q, want %q", c.name, u.Error, c.want)
		}
		now, err := mainPID()
		if err != nil || now != pid {
			return fmt.Errorf("%s: the agent's PID went from %d to %d (%v): 1.0.0 must keep running", c.name, pid, now, err)
		}
		d.say("  refused %s (%s) in %s: %s; 1.0.0 still running as pid %d", c.version, c.name,
			time.Since(t0).Round(100*time.Millisecond), u.Error, pid)
	}
	if ents, _ := os.ReadDir(filepath.Join(updateDir, "versions")); len(ents) != 0 {
		return fmt.Errorf("refused versions staged: %v", ents)
	}
	return nil
}

// fillDisk leaves less than twice the release's size free on the state
// directory's filesystem (a tmpfs in the test), and returns how to undo it.
func (d *driver) fillDisk() (func(), error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(stateDir, &st); err != nil {
		return nil, err
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	fill := free - d.agentSize*3/2
	if fill <= 0 {
		return func() {}, nil
	}
	path := filepath.Join(stateDir, "filler")
	if err := os.WriteFile(path, make([]byte, fill), 0o600); err != nil {
		return nil, err
	}
	d.say("  filled %s: %d MiB left, the release is %d MiB", stateDir, (free-fill)>>20, d.agentSize>>20)
	return func() { _ = os.Remove(path) }, nil
}

func (d *driver) updateGood() error {
	agent, err := os.ReadFile(filepath.Join(d.dir, "edge-agent-1.1.0"))
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := d.offer("1.1.0", agent, nil, d.rel); err != nil {
		return err
	}
	if _, err := d.waitUpdate(heartbeat.UpdateCommitted, "1.1.0", 90*time.Second); err != nil {
		return err
	}
	pid, err := d.waitAgent("1.1.0", 10*time.Second)
	if err != nil {
		return err
	}
	if err := runs(pid, update.BinaryPath(updateDir, "1.1.0")); err != nil {
		return err
	}
	if err := d.moreReadings(10); err != nil {
		return err
	}
	d.say("  1.1.0 committed %s after the offer, running as pid %d from %s", time.Since(t0).Round(100*time.Millisecond),
		pid, update.BinaryPath(updateDir, "1.1.0"))
	return nil
}

// rollback offers version (binary name) and waits for its rollback to
// 1.1.0.
func (d *driver) rollback(version, name, why string) error {
	b, err := os.ReadFile(filepath.Join(d.dir, name))
	if err != nil {
		return err
	}
	if err := d.offer(version, b, nil, d.rel); err != nil {
		return err
	}
	if _, err := d.waitUpdate(heartbeat.UpdateInstalled, version, 60*time.Second); err != nil {
		return err
	}
	t0 := time.Now()
	u, err := d.waitUpdate(heartbeat.UpdateRolledBack, version, 3*time.Minute)
	if err != nil {
		return err
	}
	took := time.Since(t0)
	if !strings.Contains(u.Error, why) {
		return fmt.Errorf("rolled back for %q, want %q", u.Error, why)
	}
	pid, err := d.waitAgent("1.1.0", 30*time.Second)
	if err != nil {
		return err
	}
	if err := runs(pid, update.BinaryPath(updateDir, "1.1.0")); err != nil {
		return err
	}
	s, err := update.LoadState(updateDir)
	if err != nil {
		return err
	}
	if !s.HasFailed(version) || s.Committed != "1.1.0" || s.Trial != nil {
		return fmt.Errorf("state after the rollback: %+v", s)
	}
	if err := d.moreReadings(10); err != nil {
		return err
	}
	restarts, _ := exec.Command("systemctl", "show", "-p", "NRestarts", "--value", "edge-agent").Output()
	d.say("  %s rolled back %s after it was installed (%s); 1.1.0 running again as pid %d; NRestarts=%s",
		version, took.Round(100*time.Millisecond), u.Error, pid, strings.TrimSpace(string(restarts)))
	return nil
}

func (d *driver) crashing() error {
	return d.rollback("1.2.0", "crashing", "starts")
}

func (d *driver) unhealthy() error {
	return d.rollback("1.3.0", "unhealthy", "deadline")
}

func (d *driver) debUpgrade() error {
	before, err := d.lastSeq()
	if err != nil {
		return err
	}
	out, err := exec.Command("dpkg", "-i", "--force-confold", filepath.Join(d.dir, "edge-agent_2.0.0_amd64.deb")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dpkg -i: %v\n%s", err, out)
	}
	hb, err := d.waitFor("2.0.0 online, 1.1.0 superseded", 60*time.Second, func(hb heartbeat.Heartbeat) bool {
		return hb.State == heartbeat.Online && hb.Agent == "2.0.0" && hb.Update != nil && hb.Update.Error == update.Superseded
	})
	if err != nil {
		return err
	}
	pid, err := mainPID()
	if err != nil {
		return err
	}
	if err := runs(pid, "/usr/bin/edge-agent"); err != nil {
		return err
	}
	if ents, _ := os.ReadDir(filepath.Join(updateDir, "versions")); len(ents) != 0 {
		return fmt.Errorf("superseded versions kept: %d", len(ents))
	}
	if err := d.moreReadings(10); err != nil {
		return err
	}
	d.say("  2.0.0 from the .deb runs as pid %d (%s); the buffer's seqs continue after %d", pid, hb.Update.Error, before)
	return nil
}

// moreReadings waits for n readings with seqs above the highest seen so
// far: the agent running now takes and publishes readings.
func (d *driver) moreReadings(n int) error {
	from, _ := d.maxSeen()
	_, err := d.waitFor(fmt.Sprintf("%d more readings", n), 30*time.Second, func(heartbeat.Heartbeat) bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		c := 0
		for s := range d.seqs {
			if s > from {
				c++
			}
		}
		return c >= n
	})
	return err
}

func (d *driver) lastSeq() (uint64, error) {
	n, ok := d.maxSeen()
	if !ok {
		return 0, errors.New("no reading received")
	}
	return n, nil
}

func (d *driver) maxSeen() (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var m uint64
	for s := range d.seqs {
		m = max(m, s)
	}
	return m, len(d.seqs) > 0
}

// count stops the agent and checks that every seq from the first received
// to the buffer's last was received or is still in the buffer.
func (d *driver) count() error {
	if err := systemctl("stop", "edge-agent"); err != nil {
		return err
	}
	left, st, err := testkit.BufferedSeqs(bufPath)
	if err != nil {
		return err
	}
	// The broker acknowledged every reading not left in the buffer; its
	// delivery to our subscription may still be under way.
	first, missing, dups := d.unaccounted(st.LastSeq, left)
	for end := time.Now().Add(15 * time.Second); len(missing) > 0 && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
		first, missing, dups = d.unaccounted(st.LastSeq, left)
	}
	if len(missing) > 0 || st.LastSeq-first < 10 {
		return fmt.Errorf("seqs %d..%d: %d missing %v", first, st.LastSeq, len(missing), missing[:min(len(missing), 20)])
	}
	d.mu.Lock()
	received := len(d.seqs)
	d.mu.Unlock()
	d.say("  seqs %d..%d: %d received, %d still buffered, 0 missing (%d received twice, dropped by seq downstream)",
		first, st.LastSeq, received, len(left), dups)
	return nil
}

// unaccounted returns, from the first seq received to last, those neither
// received nor left in the buffer, and how many were received twice.
func (d *driver) unaccounted(last uint64, left map[uint64]bool) (first uint64, missing []uint64, dups int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	first = last
	for s := range d.seqs {
		first = min(first, s)
	}
	for s := first; s <= last; s++ {
		if d.seqs[s] > 1 {
			dups++
		}
		if d.seqs[s] == 0 && !left[s] {
			missing = append(missing, s)
		}
	}
	return first, missing, dups
}

// dump adds what systemd and the agent said, after a failure.
func (d *driver) dump() {
	for _, c := range [][]string{
		{"systemctl", "show", "edge-agent", "-p", "ActiveState,SubState,NRestarts,MainPID,Result"},
		{"systemctl", "list-timers", "--all", "--no-pager"},
		{"cat", filepath.Join(updateDir, update.StateFile)},
		{"journalctl", "--no-pager", "-o", "cat", "-n", "60", "-u", "edge-agent", "-u", "edge-agent-update-guard"},
	} {
		out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
		d.say("== %s\n%s", strings.Join(c, " "), out)
	}
}

func systemctl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func mainPID() (int, error) {
	out, err := exec.Command("systemctl", "show", "-p", "MainPID", "--value", "edge-agent").Output()
	if err != nil {
		return 0, err
	}
	var pid int
	if _, err := fmt.Sscan(string(out), &pid); err != nil || pid == 0 {
		return 0, fmt.Errorf("no main PID (%q)", out)
	}
	return pid, nil
}

// runs checks that pid runs exe.
func runs(pid int, exe string) error {
	got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return err
	}
	if got != exe {
		return fmt.Errorf("pid %d runs %s, want %s", pid, got, exe)
	}
	return nil
}
