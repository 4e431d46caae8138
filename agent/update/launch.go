package update

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

// LaunchedEnv is set (to "1") in the environment of a binary the launcher
// exec'd, so that it does not launch again.
const LaunchedEnv = "EDGE_AGENT_LAUNCHED"

// Superseded is the report's error when the package's own binary is newer
// than (or as new as) the over-the-air version: an apt upgrade won.
const Superseded = "superseded by the installed package"

// Launcher picks the binary `edge-agent run` becomes. The package's
// binary (/usr/bin/edge-agent) is the launcher: at the start of run it
// reads state.json and execs a committed or on-trial over-the-air version
// newer than itself, after verifying its signed manifest and its sha256
// again; it counts a trial's starts and rolls the trial back after
// MaxStarts or past its deadline.
type Launcher struct {
	Dir    string           // update.dir
	Keys   release.Verifier // the release keys (update.keys_file)
	Self   string           // this binary's version
	Arch   string           // default release.RunningArch()
	Logger *slog.Logger

	now  func() time.Time
	boot func() (string, time.Duration) // boot id, time since boot
}

// Choice is what the launcher chose to run.
type Choice struct {
	// Exe is the over-the-air binary to exec; "" runs this binary.
	Exe     string
	Version string
	// file is Exe, opened and verified: Exec runs this very file (through
	// /proc/self/fd), so a file swapped after the check is not run.
	file *os.File
}

// Close releases the verified file of a Choice that is not exec'd.
func (c Choice) Close() {
	if c.file != nil {
		c.file.Close()
	}
}

func (l *Launcher) defaults() {
	if l.Arch == "" {
		l.Arch = release.RunningArch()
	}
	if l.Logger == nil {
		l.Logger = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.boot == nil {
		l.boot = kernelBoot
	}
}

// kernelBoot is the boot id and the time since boot (CLOCK_BOOTTIME,
// which counts suspended time and never jumps with NTP).
func kernelBoot() (string, time.Duration) {
	id, err := clock.BootID()
	if err != nil {
		return "", clock.SinceBoot()
	}
	return fmt.Sprintf("%x", id), clock.SinceBoot()
}

// Choose decides what to run in process pid and records it in state.json
// (the start of a trial, a rollback, the PID and binary the guard may
// signal).
func (l *Launcher) Choose(pid int) (Choice, error) {
	l.defaults()
	var c Choice
	err := Modify(l.Dir, func(s *State) error {
		c = l.choose(s)
		s.PID, s.Exe = pid, c.Exe
		return nil
	})
	return c, err
}

func (l *Launcher) choose(s *State) Choice {
	now := l.now()
	for range 8 { // each pass fails a version or returns
		v, t := s.Committed, s.Trial
		if t != nil {
			v = t.Version
		}
		if v == "" {
			return Choice{}
		}
		newer, err := release.CompareVersions(v, l.Self)
		if err != nil {
			l.Logger.Warn("update: this binary or the over-the-air version is not a release build; running this binary",
				"self", l.Self, "ota", v, "err", err)
			return Choice{}
		}
		if newer <= 0 {
			l.Logger.Info("update: the installed package is as new as the over-the-air version or newer; running it",
				"self", l.Self, "ota", v)
			s.Committed, s.Previous, s.Trial = "", "", nil
			s.report(heartbeat.Update{State: heartbeat.UpdateCommitted, Version: l.Self, From: v, Error: Superseded}, now)
			if err := prune(l.Dir); err != nil {
				l.Logger.Warn("update: removing superseded versions", "err", err)
			}
			return Choice{}
		}
		if t != nil {
			if why := l.countStart(t); why != "" {
				l.Logger.Error("update: rolling back", "version", t.Version, "to", orPackage(t.Previous), "why", why)
				s.rollback(why, now)
				continue
			}
		}
		f, err := l.verifyStaged(v)
		if err != nil {
			why := "staged binary fails verification: " + err.Error()
			l.Logger.Error("update: not running the over-the-air version", "version", v, "err", err)
			if t != nil {
				s.rollback(why, now)
				continue
			}
			s.fail(v)
			s.Committed, s.Previous = s.Previous, ""
			s.report(heartbeat.Update{State: heartbeat.UpdateRolledBack, Version: v, Error: why}, now)
			continue
		}
		if t != nil && t.Starts == 1 {
			s.report(heartbeat.Update{State: heartbeat.UpdateTrial, Version: t.Version, From: t.From, Rollout: t.Rollout}, now)
		}
		return Choice{Exe: BinaryPath(l.Dir, v), Version: v, file: f}
	}
	return Choice{}
}

// countStart counts a start of the trial and says why it must roll back
// ("" when it may start).
func (l *Launcher) countStart(t *Trial) string {
	id, since := l.boot()
	if t.Boot != id || t.Boot == "" {
		// The first start in this boot: the deadline counts from here
		// (a reboot is one more start, not a lapse of time).
		t.Boot, t.Since = id, Duration(since)
	}
	t.Starts++
	switch {
	case t.Starts > MaxStarts:
		return fmt.Sprintf("%d starts without becoming healthy", MaxStarts)
	case since-time.Duration(t.Since) > time.Duration(t.Deadline):
		return fmt.Sprintf("not healthy within the deadline (%v)", time.Duration(t.Deadline))
	}
	return ""
}

// verifyStaged checks version's staged signed manifest with the release
// keys and the binary's size and sha256 against it: a file changed on the
// SD card since the download is not run. It returns the binary, open: the
// file that was checked is the one Exec runs.
func (l *Launcher) verifyStaged(version string) (*os.File, error) {
	if l.Keys == nil {
		return nil, errors.New("no release keys (update.keys_file)")
	}
	b, err := os.ReadFile(ManifestPath(l.Dir, version))
	if err != nil {
		return nil, err
	}
	m, err := release.OpenManifest(b, l.Keys)
	if err != nil {
		return nil, err
	}
	if m.Version != version || m.Arch != l.Arch {
		return nil, fmt.Errorf("the staged manifest is for %s %s, not %s %s", m.Version, m.Arch, version, l.Arch)
	}
	path := BinaryPath(l.Dir, version)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if err := verifyOpen(f, path, m.Size, m.SHA256); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Exec replaces this process with c's binary, passing args (argv[1:])
// and the environment with LaunchedEnv set. It returns only on failure.
func Exec(c Choice, args []string) error {
	env := append(os.Environ(), LaunchedEnv+"=1")
	path := c.Exe
	if c.file != nil {
		// The verified file itself (fexecve): /proc/PID/exe still names
		// c.Exe, which the guard checks.
		path = fmt.Sprintf("/proc/self/fd/%d", c.file.Fd())
	}
	err := syscall.Exec(path, append([]string{c.Exe}, args...), env)
	c.Close()
	return fmt.Errorf("exec %s: %w", c.Exe, err)
}

// Launched reports whether this process was exec'd by the launcher.
func Launched() bool { return os.Getenv(LaunchedEnv) == "1" }

// isStaged reports whether exe is a binary under dir's versions, and
// which version.
func isStaged(dir, exe string) (string, bool) {
	rel, err := filepath.Rel(filepath.Join(dir, versionsDir), exe)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", false
	}
	v, name, ok := strings.Cut(rel, string(filepath.Separator))
	return v, ok && name == BinaryName
}

func orPackage(v string) string {
	if v == "" {
		return "the package's binary"
	}
	return v
}
