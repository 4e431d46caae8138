package update

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// The launcher's tests on the real binary: edge-agent built as version
// 1.0.0 (the package's binary) and fakeagent staged as 1.1.0.
var (
	buildOnce         sync.Once
	agentBin, fakeBin string
	buildErr          error
	buildDir          string
)

func builtBinaries(t *testing.T) (agent, fake []byte) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "update-launch-test")
		if buildErr != nil {
			return
		}
		agentBin = filepath.Join(buildDir, "edge-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=1.0.0", "-o", agentBin,
			"github.com/edgepipe/sensorpipe/agent/cmd/edge-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New(string(out))
			return
		}
		var bins []string
		bins, buildErr = testkit.Build(buildDir, "./testdata/fakeagent")
		if buildErr == nil {
			fakeBin = bins[0]
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	a, err := os.ReadFile(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.ReadFile(fakeBin)
	if err != nil {
		t.Fatal(err)
	}
	return a, f
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binRig is a config whose update section points at a temp dir, and the
// real agent binary to start with it.
type binRig struct {
	*rig
	config string
	fake   []byte
}

func newBinRig(t *testing.T) *binRig {
	t.Helper()
	_, fake := builtBinaries(t)
	r := newRig(t)
	keys := filepath.Join(t.TempDir(), "release-keys.pem")
	if err := os.WriteFile(keys, r.key.PublicPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	// No sensors: the full config check fails with exit 2 naming
	// "sensors", which is how a test sees that the package's binary ran
	// (the launcher reads only the update section).
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	body := "device_id: d\nmqtt: {url: 'tcp://127.0.0.1:1'}\nupdate: {keys_file: " + keys + ", dir: " + r.dir + "}\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return &binRig{rig: r, config: cfg, fake: fake}
}

// stageFake stages fakeagent as version, signed with the release key.
func (b *binRig) stageFake(version string) {
	b.t.Helper()
	env, err := release.SignManifest(release.Manifest{Version: version, Arch: release.RunningArch(), Size: int64(len(b.fake)),
		SHA256: sum(b.fake), URL: "https://releases.example.com/" + version}, b.key)
	if err != nil {
		b.t.Fatal(err)
	}
	part := partPath(b.dir, version)
	if err := os.MkdirAll(filepath.Dir(part), 0o750); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(part, b.fake, 0o640); err != nil {
		b.t.Fatal(err)
	}
	if err := stage(b.dir, version, part, env); err != nil {
		b.t.Fatal(err)
	}
}

type runResult struct {
	code           int
	stdout, stderr string
}

// ran says which binary ran: "fake" (the over-the-air one, exec'd by
// the launcher) or "self" (the package's, which then refused the config).
func (r runResult) ran() string {
	switch {
	case strings.HasPrefix(r.stdout, "fakeagent launched=1 args=run --config "):
		return "fake"
	case r.code == 2 && strings.Contains(r.stderr, "sensors"):
		return "self"
	}
	return "?"
}

func (b *binRig) run(env ...string) runResult {
	b.t.Helper()
	cmd := exec.Command(agentBin, "run", "--config", b.config)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		b.t.Fatal(err)
	}
	return runResult{code, stdout.String(), stderr.String()}
}

func TestBinaryCommittedVersionIsExecd(t *testing.T) {
	b := newBinRig(t)
	b.stageFake("1.1.0")
	b.set(func(s *State) { s.Committed = "1.1.0" })
	res := b.run("FAKEAGENT_EXIT=0")
	if res.ran() != "fake" || res.code != 0 {
		t.Fatalf("%+v", res)
	}
	// Exec keeps the PID: the launcher recorded its own, which the guard
	// checks against /proc/PID/exe.
	if s := b.state(); s.PID == 0 || s.Exe != BinaryPath(b.dir, "1.1.0") {
		t.Fatalf("%+v", s)
	}
	// A process the launcher started does not launch again.
	if res := b.run(LaunchedEnv + "=1"); res.ran() != "self" {
		t.Fatalf("launched twice: %+v", res)
	}
}

func TestBinaryTrialCrashingRollsBackAfterThreeStarts(t *testing.T) {
	b := newBinRig(t)
	b.stageFake("1.1.0")
	b.set(func(s *State) { s.Trial = trial("1.1.0", "") })
	for i := 1; i <= MaxStarts; i++ {
		res := b.run() // fakeagent exits 1: a version that crashes at start
		if res.ran() != "fake" || res.code != 1 {
			t.Fatalf("start %d: %+v", i, res)
		}
		if s := b.state(); s.Trial == nil || s.Trial.Starts != i {
			t.Fatalf("start %d not counted: %+v", i, s)
		}
	}
	res := b.run()
	if res.ran() != "self" {
		t.Fatalf("start %d: %+v", MaxStarts+1, res)
	}
	s := b.state()
	if s.Trial != nil || !s.HasFailed("1.1.0") || s.Report.State != heartbeat.UpdateRolledBack {
		t.Fatalf("%+v %+v", s, s.Report)
	}
	if !strings.Contains(res.stderr, "rolling back") {
		t.Errorf("the rollback is not logged: %s", res.stderr)
	}
}

func TestBinaryTrialPastDeadlineRollsBack(t *testing.T) {
	b := newBinRig(t)
	b.stageFake("1.1.0")
	id, since := kernelBoot()
	b.set(func(s *State) {
		s.Trial = trial("1.1.0", "")
		s.Trial.Starts, s.Trial.Boot, s.Trial.Since = 1, id, Duration(since-time.Duration(s.Trial.Deadline)-time.Second)
	})
	if res := b.run(); res.ran() != "self" {
		t.Fatalf("%+v", res)
	}
	if s := b.state(); !s.HasFailed("1.1.0") || !strings.Contains(s.Report.Error, "deadline") {
		t.Fatalf("%+v", s.Report)
	}
}

func TestBinaryPackageNewerSupersedes(t *testing.T) {
	b := newBinRig(t)
	b.stageFake("0.9.0")
	b.set(func(s *State) { s.Committed = "0.9.0" })
	if res := b.run(); res.ran() != "self" {
		t.Fatalf("%+v", res)
	}
	if s := b.state(); s.Committed != "" || s.Report.Error != Superseded {
		t.Fatalf("%+v", s.Report)
	}
}

func TestBinaryTamperedStagedBinaryIsNotExecd(t *testing.T) {
	b := newBinRig(t)
	b.stageFake("1.1.0")
	b.set(func(s *State) { s.Trial = trial("1.1.0", "") })
	evil := "#!/bin/sh\necho fakeagent launched=1 args=run --config tampered\n"
	if err := os.WriteFile(BinaryPath(b.dir, "1.1.0"), []byte(evil), 0o750); err != nil {
		t.Fatal(err)
	}
	if res := b.run(); res.ran() != "self" {
		t.Fatalf("%+v", res)
	}
	if s := b.state(); !s.HasFailed("1.1.0") || s.Report.State != heartbeat.UpdateRolledBack || !strings.Contains(s.Report.Error, "verification") {
		t.Fatalf("%+v", s.Report)
	}
}

func TestBinaryStatus(t *testing.T) {
	b := newBinRig(t)
	b.set(func(s *State) { s.Committed = "1.1.0"; s.Failed = []string{"1.2.0"} })
	out, err := exec.Command(agentBin, "update", "status", "--config", b.config).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "committed:  1.1.0") || !strings.Contains(string(out), "1.2.0") {
		t.Fatalf("%v: %s", err, out)
	}
	out, err = exec.Command(agentBin, "update", "status", "--json", "--dir", b.dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"committed": "1.1.0"`) {
		t.Fatalf("%v: %s", err, out)
	}
	out, err = exec.Command(agentBin, "update", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "guard") {
		t.Fatalf("update --help: %v: %s", err, out)
	}
	if err := exec.Command(agentBin, "update", "bogus").Run(); err == nil {
		t.Fatal("update bogus: exit 0")
	}
	// No update was ever staged: the guard does nothing, creates nothing.
	empty := filepath.Join(t.TempDir(), "none")
	if out, err := exec.Command(agentBin, "update", "guard", "--dir", empty).CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("guard without state: %v: %s", err, out)
	}
	if _, err := os.Stat(empty); err == nil {
		t.Fatal("the guard created the update dir")
	}
}
