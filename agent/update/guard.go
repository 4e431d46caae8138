package update

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Guard is `edge-agent update guard`, which a systemd timer runs every
// 15 s, apart from the agent so that it works whatever the new version
// does: past the deadline with the trial not committed, it rolls the
// trial back in state.json and stops the agent (SIGTERM; SIGKILL at the
// next run if it is still there), and systemd's Restart=always brings the
// launcher back, which runs the previous version.
type Guard struct {
	Dir    string
	Logger *slog.Logger

	now    func() time.Time
	boot   func() (string, time.Duration)
	signal func(pid int, sig syscall.Signal) error
	exeOf  func(pid int) (string, error)
}

func (g *Guard) defaults() {
	if g.Logger == nil {
		g.Logger = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.boot == nil {
		g.boot = kernelBoot
	}
	if g.signal == nil {
		g.signal = syscall.Kill
	}
	if g.exeOf == nil {
		g.exeOf = func(pid int) (string, error) { return os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe") }
	}
}

// Check runs the guard once; it says what it did ("" nothing).
func (g *Guard) Check() (string, error) {
	g.defaults()
	var did string
	var kill func() error
	err := Modify(g.Dir, func(s *State) error {
		if t := s.Trial; t != nil {
			id, since := g.boot()
			if t.Starts == 0 || t.Boot != id || since-time.Duration(t.Since) <= time.Duration(t.Deadline) {
				return nil // not started (in this boot) yet, or within its deadline
			}
			why := fmt.Sprintf("not healthy within the deadline (%v; guard)", time.Duration(t.Deadline))
			s.rollback(why, g.now())
			did = "rolled back " + t.Version + ": " + why
			g.Logger.Error("update guard: rolling back", "version", t.Version, "to", orPackage(t.Previous), "why", why)
			if s.Exe == BinaryPath(g.Dir, t.Version) {
				kill = g.stop(s.PID, s.Exe, syscall.SIGTERM)
			}
			return nil
		}
		// A failed version still running: it did not stop on SIGTERM.
		if v, ok := isStaged(g.Dir, s.Exe); ok && s.HasFailed(v) {
			kill = g.stop(s.PID, s.Exe, syscall.SIGKILL)
		}
		return nil
	})
	if err != nil {
		return did, err
	}
	if kill != nil {
		if err := kill(); err != nil {
			return did, err
		}
		if did == "" {
			did = "killed a rolled-back version still running"
		}
	}
	return did, nil
}

// stop returns a func that signals pid if it still runs exe (a PID is
// reused; the agent may be running another binary by now).
func (g *Guard) stop(pid int, exe string, sig syscall.Signal) func() error {
	return func() error {
		if pid <= 0 {
			return nil
		}
		got, err := g.exeOf(pid)
		if errors.Is(err, os.ErrNotExist) || (err == nil && got != exe) {
			return nil // gone, or another program now
		}
		if err != nil {
			return fmt.Errorf("update guard: pid %d: %w", pid, err)
		}
		g.Logger.Warn("update guard: stopping the agent", "pid", pid, "exe", exe, "signal", sig.String())
		if err := g.signal(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("update guard: signal pid %d: %w", pid, err)
		}
		return nil
	}
}
