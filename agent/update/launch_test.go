package update

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// rig is an update dir with a release key and a fake boot clock.
type rig struct {
	t     *testing.T
	dir   string
	key   *sign.Signer
	boot  string
	since time.Duration
}

func newRig(t *testing.T) *rig {
	t.Helper()
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, dir: t.TempDir(), key: key, boot: "boot-1", since: time.Hour}
}

// stage stages version as if downloaded, its manifest signed by signer
// (the rig's release key when nil).
func (r *rig) stage(version string, signer release.Signer) []byte {
	r.t.Helper()
	bin := []byte("#!/bin/sh\necho " + version + "\n")
	if signer == nil {
		signer = r.key
	}
	env, err := release.SignManifest(release.Manifest{Version: version, Arch: release.RunningArch(), Size: int64(len(bin)),
		SHA256: sum(bin), URL: "https://releases.example.com/" + version}, signer)
	if err != nil {
		r.t.Fatal(err)
	}
	part := partPath(r.dir, version)
	if err := os.MkdirAll(filepath.Dir(part), 0o750); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(part, bin, 0o640); err != nil {
		r.t.Fatal(err)
	}
	if err := stage(r.dir, version, part, env); err != nil {
		r.t.Fatal(err)
	}
	return bin
}

func (r *rig) set(fn func(*State)) {
	r.t.Helper()
	if err := Modify(r.dir, func(s *State) error { fn(s); return nil }); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) state() *State {
	r.t.Helper()
	s, err := LoadState(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

func (r *rig) launcher(self string) *Launcher {
	return &Launcher{Dir: r.dir, Keys: r.key.Verifier(), Self: self,
		now: func() time.Time { return time.Unix(1_800_000_000, 0) }, boot: func() (string, time.Duration) { return r.boot, r.since }}
}

func (r *rig) choose(self string) Choice {
	r.t.Helper()
	c, err := r.launcher(self).Choose(4242)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(c.Close)
	return c
}

func trial(version, previous string) *Trial {
	return &Trial{Version: version, From: "1.0.0", Previous: previous, Rollout: "r1", Deadline: Duration(2 * time.Minute)}
}

func TestLaunchRunsItselfWithoutUpdates(t *testing.T) {
	r := newRig(t)
	if c := r.choose("1.0.0"); c.Exe != "" {
		t.Fatalf("chose %+v with no state", c)
	}
}

func TestLaunchCommitted(t *testing.T) {
	r := newRig(t)
	r.stage("1.1.0", nil)
	r.set(func(s *State) { s.Committed = "1.1.0" })
	c := r.choose("1.0.0")
	if c.Exe != BinaryPath(r.dir, "1.1.0") || c.Version != "1.1.0" {
		t.Fatalf("chose %+v", c)
	}
	if s := r.state(); s.PID != 4242 || s.Exe != c.Exe {
		t.Fatalf("pid/exe not recorded: %+v", s)
	}
}

func TestLaunchTrialStartsThenRollsBack(t *testing.T) {
	r := newRig(t)
	r.stage("1.1.0", nil)
	r.set(func(s *State) { s.Trial = trial("1.1.0", "") })
	for i := 1; i <= MaxStarts; i++ {
		r.since += time.Second
		if c := r.choose("1.0.0"); c.Version != "1.1.0" {
			t.Fatalf("start %d: chose %+v", i, c)
		}
		if s := r.state(); s.Trial == nil || s.Trial.Starts != i || s.Report.State != heartbeat.UpdateTrial {
			t.Fatalf("start %d: %+v", i, s)
		}
	}
	if c := r.choose("1.0.0"); c.Exe != "" {
		t.Fatalf("start %d ran the trial: %+v", MaxStarts+1, c)
	}
	s := r.state()
	if s.Trial != nil || s.Committed != "" || !s.HasFailed("1.1.0") || s.Report.State != heartbeat.UpdateRolledBack ||
		!strings.Contains(s.Report.Error, "starts") || s.Exe != "" {
		t.Fatalf("after the rollback: %+v %+v", s, s.Report)
	}
}

func TestLaunchTrialDeadline(t *testing.T) {
	r := newRig(t)
	r.stage("1.1.0", nil)
	r.set(func(s *State) { s.Trial = trial("1.1.0", "") })
	if c := r.choose("1.0.0"); c.Version != "1.1.0" {
		t.Fatalf("first start: %+v", c)
	}
	// A reboot: the deadline counts from the first start in the new boot.
	r.boot, r.since = "boot-2", 10*time.Second
	if c := r.choose("1.0.0"); c.Version != "1.1.0" {
		t.Fatalf("start after a reboot: %+v", c)
	}
	r.since += 2*time.Minute + time.Second
	if c := r.choose("1.0.0"); c.Exe != "" {
		t.Fatalf("ran past the deadline: %+v", c)
	}
	if s := r.state(); !s.HasFailed("1.1.0") || !strings.Contains(s.Report.Error, "deadline") {
		t.Fatalf("%+v", s.Report)
	}
}

func TestLaunchRollsBackToPreviousOTAVersion(t *testing.T) {
	r := newRig(t)
	r.stage("1.1.0", nil)
	r.stage("1.2.0", nil)
	r.set(func(s *State) { s.Committed = "1.1.0"; s.Trial = trial("1.2.0", "1.1.0"); s.Trial.Starts = MaxStarts })
	c := r.choose("1.0.0")
	if c.Version != "1.1.0" {
		t.Fatalf("chose %+v, want the previous version 1.1.0", c)
	}
	if s := r.state(); s.Committed != "1.1.0" || !s.HasFailed("1.2.0") {
		t.Fatalf("%+v", s)
	}
}

func TestLaunchSupersededByPackage(t *testing.T) {
	for _, self := range []string{"1.1.0", "1.3.0", "v1.3.0"} {
		t.Run(self, func(t *testing.T) {
			r := newRig(t)
			r.stage("1.0.5", nil)
			r.stage("1.1.0", nil)
			r.set(func(s *State) { s.Committed = "1.1.0"; s.Previous = "1.0.5" })
			if c := r.choose(self); c.Exe != "" {
				t.Fatalf("ran %+v over the newer package", c)
			}
			s := r.state()
			if s.Committed != "" || s.Report.State != heartbeat.UpdateCommitted || s.Report.Error != Superseded || s.Report.From != "1.1.0" {
				t.Fatalf("%+v %+v", s, s.Report)
			}
			if ents, _ := os.ReadDir(filepath.Join(r.dir, versionsDir)); len(ents) != 0 {
				t.Errorf("superseded versions kept: %v", ents)
			}
		})
	}
}

func TestLaunchRefusesTamperedBinary(t *testing.T) {
	other, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		tamper func(r *rig)
	}{
		{"binary changed", func(r *rig) {
			if err := os.WriteFile(BinaryPath(r.dir, "1.1.0"), []byte("#!/bin/sh\necho evil\n"), 0o750); err != nil {
				t.Fatal(err)
			}
		}},
		{"binary appended to", func(r *rig) {
			f, err := os.OpenFile(BinaryPath(r.dir, "1.1.0"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.WriteString("x")
			f.Close()
		}},
		{"manifest signed by another key", func(r *rig) { r.stage("1.1.0", other) }},
		{"manifest missing", func(r *rig) { _ = os.Remove(ManifestPath(r.dir, "1.1.0")) }},
		{"manifest of another version", func(r *rig) {
			r.stage("1.1.1", nil)
			b, _ := os.ReadFile(ManifestPath(r.dir, "1.1.1"))
			_ = os.WriteFile(ManifestPath(r.dir, "1.1.0"), b, 0o640)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, onTrial := range []bool{true, false} {
				r := newRig(t)
				r.stage("1.1.0", nil)
				r.set(func(s *State) {
					if onTrial {
						s.Trial = trial("1.1.0", "")
					} else {
						s.Committed = "1.1.0"
					}
				})
				tc.tamper(r)
				if c := r.choose("1.0.0"); c.Exe != "" {
					t.Fatalf("trial %v: ran %+v", onTrial, c)
				}
				s := r.state()
				if !s.HasFailed("1.1.0") || s.Committed != "" || s.Trial != nil || s.Report.State != heartbeat.UpdateRolledBack ||
					!strings.Contains(s.Report.Error, "verification") {
					t.Fatalf("trial %v: %+v %+v", onTrial, s, s.Report)
				}
			}
		})
	}
}

func TestLaunchNotReleaseBuild(t *testing.T) {
	r := newRig(t)
	r.stage("1.1.0", nil)
	r.set(func(s *State) { s.Committed = "1.1.0" })
	if c := r.choose("dev"); c.Exe != "" {
		t.Fatalf("a dev build launched %+v", c)
	}
	if s := r.state(); s.Committed != "1.1.0" {
		t.Fatalf("a dev build changed the state: %+v", s)
	}
}

func TestGuard(t *testing.T) {
	type sent struct {
		pid int
		sig syscall.Signal
	}
	for _, tc := range []struct {
		name       string
		boot       string
		elapsed    time.Duration
		exe        func(dir string) string // what /proc/PID/exe says
		failed     bool                    // state: the trial already rolled back
		notStarted bool                    // the launcher has not started the trial yet
		want       []sent
		rollback   bool
	}{
		{name: "within the deadline", boot: "boot-1", elapsed: time.Minute},
		{name: "past the deadline", boot: "boot-1", elapsed: 3 * time.Minute, rollback: true, want: []sent{{4242, syscall.SIGTERM}}},
		{name: "past the deadline, pid reused", boot: "boot-1", elapsed: 3 * time.Minute, rollback: true,
			exe: func(string) string { return "/usr/bin/other" }},
		{name: "trial not started in this boot", boot: "boot-2", elapsed: time.Hour},
		{name: "trial installed, not started yet (no boot id)", boot: "", elapsed: time.Hour, notStarted: true},
		{name: "failed version still running", boot: "boot-1", failed: true, want: []sent{{4242, syscall.SIGKILL}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.stage("1.1.0", nil)
			r.set(func(s *State) {
				s.Trial = trial("1.1.0", "")
				s.Trial.Boot, s.Trial.Since, s.Trial.Starts = "boot-1", Duration(r.since), 1
				if tc.notStarted {
					s.Trial.Boot, s.Trial.Since, s.Trial.Starts = "", 0, 0
				}
				s.PID, s.Exe = 4242, BinaryPath(r.dir, "1.1.0")
				if tc.failed {
					s.rollback("earlier", time.Now())
				}
			})
			var got []sent
			g := &Guard{Dir: r.dir, now: time.Now,
				boot:   func() (string, time.Duration) { return tc.boot, r.since + tc.elapsed },
				signal: func(pid int, sig syscall.Signal) error { got = append(got, sent{pid, sig}); return nil },
				exeOf: func(int) (string, error) {
					if tc.exe != nil {
						return tc.exe(r.dir), nil
					}
					return BinaryPath(r.dir, "1.1.0"), nil
				}}
			if _, err := g.Check(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("signals %v, want %v", got, tc.want)
			}
			s := r.state()
			if tc.rollback != (s.Trial == nil && s.Report.State == heartbeat.UpdateRolledBack && !tc.failed) {
				t.Errorf("rollback %v, want %v: %+v", s.Trial == nil, tc.rollback, s.Report)
			}
		})
	}
}
