package systemd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
)

// handledDenials are syscalls the unit may forbid on purpose because the
// agent copes with EPERM. None today: adjtimex, which agent/clock uses to
// see NTP sync, is allowed explicitly (TestAgentSyscallsAllowed checks it).
var handledDenials = map[string]bool{}

// syscallGroups parses `systemd-analyze syscall-filter` into group -> members.
func syscallGroups(t *testing.T, analyze string) map[string][]string {
	t.Helper()
	out, err := exec.Command(analyze, "syscall-filter", "--no-pager").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "@"):
			cur = strings.TrimSpace(l)
		case strings.HasPrefix(strings.TrimSpace(l), "#"), strings.TrimSpace(l) == "", cur == "":
		default:
			groups[cur] = append(groups[cur], strings.TrimSpace(l))
		}
	}
	return groups
}

func expand(groups map[string][]string, name string, into map[string]bool) {
	if !strings.HasPrefix(name, "@") {
		into[name] = true
		return
	}
	for _, m := range groups[name] {
		expand(groups, m, into)
	}
}

// allowedSyscalls applies the unit's SystemCallFilter= lines (and the deny
// list ProtectClock adds) the way systemd does, in order.
func allowedSyscalls(t *testing.T, analyze, unit string) map[string]bool {
	t.Helper()
	groups := syscallGroups(t, analyze)
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{}
	expand(groups, "@default", allowed)
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "SystemCallFilter=")
		if !ok {
			continue
		}
		deny := strings.HasPrefix(v, "~")
		set := map[string]bool{}
		for _, n := range strings.Fields(strings.TrimPrefix(v, "~")) {
			expand(groups, n, set)
		}
		for s := range set {
			if deny {
				delete(allowed, s)
			} else {
				allowed[s] = true
			}
		}
	}
	if strings.Contains(string(b), "\nProtectClock=yes\n") {
		clock := map[string]bool{}
		expand(groups, "@clock", clock)
		for s := range clock {
			delete(allowed, s)
		}
	}
	return allowed
}

func needStrace(t *testing.T) string {
	t.Helper()
	strace := testkit.NeedTool(t, "strace", "strace")
	if out, err := exec.Command(strace, "-qq", "-o", "/dev/null", "true").CombinedOutput(); err != nil {
		t.Skipf("strace cannot trace here (no ptrace permission?): %v %s", err, out)
	}
	return strace
}

func buildBin(t *testing.T, dir, pkg string) string {
	t.Helper()
	bins, err := testkit.Build(dir, pkg)
	if err != nil {
		t.Fatal(err)
	}
	return bins[0]
}

func startBroker(t *testing.T) string {
	t.Helper()
	return broker.New(t, broker.Options{}).Addr
}

func agentConfig(t *testing.T, dir, device, broker string) string {
	t.Helper()
	cfg := filepath.Join(dir, device+".yaml")
	conf := fmt.Sprintf("device_id: %s\nsensors:\n  - {name: sim-1, driver: sim, interval: 50ms}\n"+
		"buffer:\n  path: %s/%s.db\nmqtt:\n  url: tcp://%s\nstatus_listen: 127.0.0.1:0\n"+
		// A container's kernel may never report the clock synced; without
		// this the readings would wait clock.hold_unsynced (10m) for NTP.
		"clock:\n  hold_unsynced: 0s\n", device, dir, device, broker)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// traceRun runs bin under strace for a few seconds, stops it with SIGTERM
// and returns its output and the set of system calls it made.
func traceRun(t *testing.T, strace string, env []string, bin string, args ...string) (string, map[string]bool) {
	t.Helper()
	trace := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command(strace, append([]string{"-f", "-qq", "-o", trace, bin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	// strace does not pass SIGTERM on; signal the traced program, whose pid
	// opens every line of the trace (the first line is its execve).
	head, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscanf(string(head), "%d ", &pid); err != nil || pid <= 0 {
		t.Fatalf("no pid at the start of the trace: %v", err)
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("%s under strace did not stop:\n%s", bin, logs.String())
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`(?m)^(?:\d+\s+)?(?:<\.\.\. )?([a-z_0-9]+)\(`)
	used := map[string]bool{}
	for _, m := range name.FindAllStringSubmatch(string(b), -1) {
		used[m[1]] = true
	}
	if len(used) < 20 {
		t.Fatalf("only %d system calls traced; strace output looks wrong:\n%.2000s", len(used), b)
	}
	return logs.String(), used
}

func checkAllowed(t *testing.T, unit string, used, allowed map[string]bool) {
	t.Helper()
	var denied []string
	for s := range used {
		if !allowed[s] && !handledDenials[s] {
			denied = append(denied, s)
		}
	}
	sort.Strings(denied)
	t.Logf("%d distinct system calls made; %s's filter allows %d", len(used), unit, len(allowed))
	if len(denied) > 0 {
		t.Fatalf("%s's SystemCallFilter would deny %v, which the program uses", unit, denied)
	}
}

// TestAgentSyscallsAllowed runs the real agent under strace (sim sensors,
// publishing to a broker, status endpoint) and checks that every system
// call it makes passes the unit's seccomp filter, so the hardening cannot
// kill or cripple it on a Pi. Hardware buses (I2C ioctl, sysfs reads) use
// read/ioctl, which the filter allows.
func TestAgentSyscallsAllowed(t *testing.T) {
	analyze := needAnalyze(t)
	strace := needStrace(t)
	allowed := allowedSyscalls(t, analyze, "edge-agent.service")
	dir := t.TempDir()
	bin := buildBin(t, dir, "../agent/cmd/edge-agent")
	broker := startBroker(t)
	logs, used := traceRun(t, strace, nil, bin, "run", "--config", agentConfig(t, dir, "strace", broker))
	if !strings.Contains(logs, "mqtt connected") {
		t.Fatalf("the agent never connected, so the trace misses the publish path:\n%s", logs)
	}
	if !used["adjtimex"] || !allowed["adjtimex"] {
		t.Errorf("adjtimex used %v, allowed %v: the agent's clock-sync check needs both", used["adjtimex"], allowed["adjtimex"])
	}
	checkAllowed(t, "edge-agent.service", used, allowed)
}

// TestForwarderSyscallsAllowed does the same for cloud-forwarder.service:
// a real agent publishes to the broker, the traced forwarder moves the
// readings to an embedded Kafka (kfake).
func TestForwarderSyscallsAllowed(t *testing.T) {
	analyze := needAnalyze(t)
	strace := needStrace(t)
	allowed := allowedSyscalls(t, analyze, "cloud-forwarder.service")
	dir := t.TempDir()
	agentBin := buildBin(t, dir, "../agent/cmd/edge-agent")
	fwdBin := buildBin(t, dir, "../cloud/cmd/cloud-forwarder")
	broker := startBroker(t)
	k := kafka.New(t, kafka.Options{Topics: map[string]int32{"sensor-readings": 1, "sensor-readings.dlq": 1}})

	agent := exec.Command(agentBin, "run", "--config", agentConfig(t, dir, "feeder", broker))
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })

	logs, used := traceRun(t, strace, []string{
		"HIVEMQ_URL=tcp://" + broker, "KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
		"CONFLUENT_BOOTSTRAP_SERVER_SASL=" + k.Addr, "FORWARDER_ID=strace",
		"FORWARDER_LISTEN=127.0.0.1:0",
	}, fwdBin, "run")

	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.ConsumeTopics("sensor-readings"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if fs := cl.PollFetches(ctx); fs.NumRecords() == 0 {
		t.Fatalf("the traced forwarder produced nothing, so the trace misses the Kafka path:\n%s", logs)
	}
	checkAllowed(t, "cloud-forwarder.service", used, allowed)
}

// TestGuardSyscallsAllowed runs `edge-agent update guard` under strace on
// a trial past its deadline, so that it takes the lock, rewrites
// state.json, reads /proc/PID/exe of the "agent" (a sleep copied to where
// a staged binary lives) and signals it, and checks that each system call
// passes the guard unit's filter. The launcher's own calls at the start of
// `edge-agent run` (flock, execve) are checked against the agent's unit.
func TestGuardSyscallsAllowed(t *testing.T) {
	analyze := needAnalyze(t)
	strace := needStrace(t)
	allowed := allowedSyscalls(t, analyze, "edge-agent-update-guard.service")
	dir := t.TempDir()
	bin := buildBin(t, dir, "../agent/cmd/edge-agent")
	udir := filepath.Join(dir, "update")
	staged := filepath.Join(udir, "versions", "1.1.0", "edge-agent")
	if err := os.MkdirAll(filepath.Dir(staged), 0o750); err != nil {
		t.Fatal(err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(staged, b, 0o750); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(staged, "60")
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Skip("no boot id:", err)
	}
	state := fmt.Sprintf(`{"v":1,"trial":{"version":"1.1.0","from":"1.0.0","deadline":"2m0s","starts":1,"boot":%q,"since":"0s"},"pid":%d,"exe":%q}`,
		strings.ReplaceAll(strings.TrimSpace(string(boot)), "-", ""), agent.Process.Pid, staged)
	if err := os.WriteFile(filepath.Join(udir, "state.json"), []byte(state), 0o640); err != nil {
		t.Fatal(err)
	}
	logs, used := traceRun(t, strace, nil, bin, "update", "guard", "--dir", udir)
	if !strings.Contains(logs, "rolled back 1.1.0") {
		t.Fatalf("the guard did not roll back:\n%s", logs)
	}
	if !used["kill"] || !used["flock"] {
		t.Errorf("the trace misses the lock or the signal: kill %v flock %v", used["kill"], used["flock"])
	}
	checkAllowed(t, "edge-agent-update-guard.service", used, allowed)
	agentAllowed := allowedSyscalls(t, analyze, "edge-agent.service")
	for _, s := range []string{"flock", "execve"} {
		if !agentAllowed[s] {
			t.Errorf("edge-agent.service denies %s, which the launcher uses", s)
		}
	}
}
