package update

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// Launch is the launcher at the start of `edge-agent run`: it returns
// when this binary is to run, and otherwise execs the over-the-air
// version chosen (argv[1:] = runArgs). Updates off (no update.keys_file),
// an unreadable config (which run then reports) or a process the launcher
// already exec'd: it returns at once.
func Launch(configPath, self string, runArgs []string, stderr io.Writer) {
	if Launched() {
		return
	}
	u, dir, err := config.ReadUpdate(configPath)
	if err != nil || u.KeysFile == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); errors.Is(err, fs.ErrNotExist) {
		return // nothing was ever staged: no lock, no write at every start
	}
	log := cmdline.NewLogger(stderr, "auto", slog.LevelInfo).With("component", "launcher")
	keys, err := sign.LoadVerifier(u.KeysFile)
	if err != nil {
		log.Error("update: release keys unreadable; running the installed binary", "err", err)
		return
	}
	l := &Launcher{Dir: dir, Keys: keys, Self: self, Logger: log}
	for range 3 {
		c, err := l.Choose(os.Getpid())
		if err != nil {
			log.Error("update: state unreadable; running the installed binary", "err", err)
			return
		}
		if c.Exe == "" {
			return
		}
		log.Info("update: running the over-the-air version", "version", c.Version, "exe", c.Exe)
		err = Exec(c, append([]string{"run"}, runArgs...))
		// exec failed (a binary for another CPU, say): that version fails.
		log.Error("update: cannot run the over-the-air version", "version", c.Version, "err", err)
		_ = Modify(dir, func(s *State) error {
			if s.Trial != nil && s.Trial.Version == c.Version {
				s.rollback(err.Error(), time.Now())
			} else if s.Committed == c.Version {
				s.fail(c.Version)
				s.Committed, s.Previous = s.Previous, ""
			}
			s.PID, s.Exe = 0, ""
			return nil
		})
	}
}

// Command is `edge-agent update guard|status`.
func Command(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: edge-agent update guard|status [--config FILE] [--dir DIR] [--json]"
	if len(args) == 0 {
		return cmdline.Usagef(usage)
	}
	switch args[0] {
	case "guard", "status":
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage+"\n\n"+
			"  guard   roll back an over-the-air version on trial past its deadline (edge-agent-update-guard.timer runs it)\n"+
			"  status  print the update state (state.json): committed, on trial, failed, the last stage")
		return nil
	default:
		return cmdline.Usagef(usage)
	}
	fl := flag.NewFlagSet("update "+args[0], flag.ContinueOnError)
	fl.SetOutput(stderr)
	path := fl.String("config", config.DefaultPath, "config file (for update.dir)")
	dirFlag := fl.String("dir", "", "update directory (default: update.dir of the config)")
	asJSON := fl.Bool("json", false, "status: print state.json as JSON")
	if err := cmdline.ParseFlags(fl, args[1:]); err != nil {
		return err
	}
	dir := *dirFlag
	if dir == "" {
		_, d, err := config.ReadUpdate(*path)
		if err != nil {
			return &config.Error{Key: "--config", Msg: err.Error(), Err: err}
		}
		dir = d
	}
	switch args[0] {
	case "guard":
		if _, err := os.Stat(filepath.Join(dir, StateFile)); errors.Is(err, fs.ErrNotExist) {
			return nil // no update ever staged: nothing to guard
		}
		g := &Guard{Dir: dir, Logger: cmdline.NewLogger(stderr, "auto", slog.LevelInfo).With("component", "update-guard")}
		did, err := g.Check()
		if did != "" {
			fmt.Fprintln(stdout, did)
		}
		return err
	case "status":
		s, err := LoadState(dir)
		if err != nil {
			return err
		}
		if *asJSON {
			return cmdline.PrintJSON(stdout, s)
		}
		printStatus(stdout, dir, s)
		return nil
	}
	return cmdline.Usagef(usage)
}

func printStatus(w io.Writer, dir string, s *State) {
	fmt.Fprintf(w, "dir:        %s\n", dir)
	fmt.Fprintf(w, "committed:  %s\n", orPackage(s.Committed))
	if s.Previous != "" {
		fmt.Fprintf(w, "previous:   %s\n", s.Previous)
	}
	if t := s.Trial; t != nil {
		fmt.Fprintf(w, "trial:      %s (from %s, %d of %d starts, deadline %v, rollback to %s)\n",
			t.Version, t.From, t.Starts, MaxStarts, time.Duration(t.Deadline), orPackage(t.Previous))
	}
	if len(s.Failed) > 0 {
		fmt.Fprintf(w, "failed:     %v\n", s.Failed)
	}
	if r := s.Report; r != nil {
		fmt.Fprintf(w, "last stage: %s %s", r.State, r.Version)
		if r.Error != "" {
			fmt.Fprintf(w, " (%s)", r.Error)
		}
		fmt.Fprintf(w, " at %s\n", time.Unix(r.At, 0).UTC().Format(time.RFC3339))
	}
}
