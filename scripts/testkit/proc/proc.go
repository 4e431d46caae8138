// Package proc runs the child programs of the e2e harness and the demo:
// start, restart (output appended to one log), signal, SIGKILL, stop with a
// grace period, last log lines for an error message, and peak RSS per
// incarnation measured by GNU time -v. Children get their own process
// group, so a Ctrl-C reaches only the parent, and the kernel signals them
// if the parent dies without stopping them.
//
//	p := &proc.Proc{Name: "edge-agent", Argv: []string{bin, "run", "--config", cfg}, LogPath: log}
//	if err := p.Start(); err != nil { ... }
//	err := proc.WaitListening(ctx, p, statusAddr, 20*time.Second)
//	err = p.Stop(10 * time.Second) // SIGTERM, then SIGKILL past the grace
package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one child program that is started, killed and restarted. Its
// output is appended to LogPath across restarts. With TimeBin set, every
// incarnation runs under `/usr/bin/time -v` so its peak RSS is measured the
// standard way; signals go to the program itself, not to time.
type Proc struct {
	Name    string
	Argv    []string
	Env     []string // added to the parent's environment
	LogPath string
	TimeBin string // GNU time, for PeakRSSKB; empty runs the program directly
	// DeathSignal is what the kernel sends the child when the parent dies
	// without stopping it (Linux); 0 means SIGKILL.
	DeathSignal syscall.Signal

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	starts  int
	rssKB   []int64 // peak RSS of each finished incarnation
	waitErr error
}

// Start launches a new incarnation.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isDone(p.done) {
		return fmt.Errorf("%s: already running", p.Name)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(logf, "==== start #%d at %s\n", p.starts, time.Now().UTC().Format(time.RFC3339Nano))
	argv := p.Argv
	timeOut := ""
	if p.TimeBin != "" {
		timeOut = fmt.Sprintf("%s.time%d", p.LogPath, p.starts)
		argv = append([]string{p.TimeBin, "-v", "-o", timeOut}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr(p.DeathSignal)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		var rss int64
		if timeOut != "" {
			rss = ParseTimeRSS(timeOut)
		}
		p.mu.Lock()
		p.waitErr = err
		if rss > 0 {
			p.rssKB = append(p.rssKB, rss)
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Running reports whether the current incarnation is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isDone(p.done)
}

// Pid is the program's own pid (time's child when wrapped).
func (p *Proc) Pid() (int, error) {
	p.mu.Lock()
	cmd, wrapped := p.cmd, p.TimeBin != ""
	p.mu.Unlock()
	if cmd == nil {
		return 0, fmt.Errorf("%s: not started", p.Name)
	}
	if !wrapped {
		return cmd.Process.Pid, nil
	}
	path := fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid)
	for range 200 {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("%s: find the child of time: %w", p.Name, err)
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s: time has no child", p.Name)
}

// Signal sends sig to the program.
func (p *Proc) Signal(sig syscall.Signal) error {
	pid, err := p.Pid()
	if err != nil {
		return err
	}
	return syscall.Kill(pid, sig)
}

// Wait waits for the current incarnation to exit, up to d.
func (p *Proc) Wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Kill9 kills the program with SIGKILL and waits for it to be gone.
func (p *Proc) Kill9() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !p.Wait(10 * time.Second) {
		return fmt.Errorf("%s: still there 10s after SIGKILL", p.Name)
	}
	return nil
}

// Stop sends SIGTERM and waits up to d; past that it kills and says so.
func (p *Proc) Stop(d time.Duration) error {
	if !p.Running() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.Wait(d) {
		return nil
	}
	p.Kill9()
	return fmt.Errorf("%s: did not exit within %v of SIGTERM (killed)", p.Name, d)
}

// ExitStatus describes how the last incarnation ended.
func (p *Proc) ExitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waitErr == nil {
		return "exit 0"
	}
	return p.waitErr.Error()
}

// ExitErr is nil when the last incarnation exited 0, else an error naming
// the program, how it ended and the last lines of its log.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	err := p.waitErr
	p.mu.Unlock()
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w; last lines of %s:\n%s", p.Name, err, p.LogPath, p.LogTail(15))
}

// Done is closed when the current incarnation exits.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Destroy kills the whole process group (time and program), for cleanup.
func (p *Proc) Destroy() {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	p.Wait(5 * time.Second)
}

// PeakRSSKB is the largest peak RSS over the finished incarnations, in KiB.
func (p *Proc) PeakRSSKB() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m int64
	for _, v := range p.rssKB {
		m = max(m, v)
	}
	return m
}

// LogTail returns the last n lines of the program's log.
func (p *Proc) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ParseTimeRSS reads "Maximum resident set size (kbytes): N" from the
// output of GNU time -v.
func ParseTimeRSS(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if ok && k == "Maximum resident set size (kbytes)" {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// WaitListening waits until addr accepts TCP connections, failing early if
// p exits first.
func WaitListening(ctx context.Context, p *Proc, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p != nil && !p.Running() {
			return fmt.Errorf("%s exited (%s) before listening on %s; last lines of %s:\n%s",
				p.Name, p.ExitStatus(), addr, p.LogPath, p.LogTail(15))
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	name := addr
	if p != nil {
		name = fmt.Sprintf("%s on %s; last lines of %s:\n%s", p.Name, addr, p.LogPath, p.LogTail(15))
	}
	return errors.New("timed out waiting for " + name)
}

// CPUTime is the user+system CPU the running incarnation has used so far,
// from /proc/PID/stat; 0 if it cannot be read.
func (p *Proc) CPUTime() time.Duration {
	pid, err := p.Pid()
	if err != nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 12th and 13th of them.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ, fixed on Linux
	return time.Duration(utime+stime) * time.Second / clkTck
}
