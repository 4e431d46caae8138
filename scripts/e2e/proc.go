package main

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

// proc is one child program the harness starts, kills and restarts. Its
// output is appended to logPath across restarts. With timeBin set, every
// incarnation runs under `/usr/bin/time -v` so its peak RSS is measured the
// standard way; signals go to the program itself, not to time.
type proc struct {
	name    string
	argv    []string
	env     []string
	logPath string
	timeBin string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	starts  int
	rssKB   []int64 // peak RSS of each finished incarnation
	waitErr error
}

// start launches a new incarnation.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isDone(p.done) {
		return fmt.Errorf("%s: already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(logf, "==== e2e: start #%d at %s\n", p.starts, time.Now().UTC().Format(time.RFC3339Nano))
	argv := p.argv
	timeOut := ""
	if p.timeBin != "" {
		timeOut = fmt.Sprintf("%s.time%d", p.logPath, p.starts)
		argv = append([]string{p.timeBin, "-v", "-o", timeOut}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		var rss int64
		if timeOut != "" {
			rss = parseTimeRSS(timeOut)
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

// running reports whether the current incarnation is alive.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isDone(p.done)
}

// pid is the program's own pid (time's child when wrapped).
func (p *proc) pid() (int, error) {
	p.mu.Lock()
	cmd, wrapped := p.cmd, p.timeBin != ""
	p.mu.Unlock()
	if cmd == nil {
		return 0, fmt.Errorf("%s: not started", p.name)
	}
	if !wrapped {
		return cmd.Process.Pid, nil
	}
	path := fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid)
	for range 200 {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("%s: find the child of time: %w", p.name, err)
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s: time has no child", p.name)
}

// signal sends sig to the program.
func (p *proc) signal(sig syscall.Signal) error {
	pid, err := p.pid()
	if err != nil {
		return err
	}
	return syscall.Kill(pid, sig)
}

// wait waits for the current incarnation to exit, up to d.
func (p *proc) wait(d time.Duration) bool {
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

// kill9 kills the program with SIGKILL and waits for it to be gone.
func (p *proc) kill9() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !p.wait(10 * time.Second) {
		return fmt.Errorf("%s: still there 10s after SIGKILL", p.name)
	}
	return nil
}

// stop sends SIGTERM and waits up to d; past that it kills and says so.
func (p *proc) stop(d time.Duration) error {
	if !p.running() {
		return nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.wait(d) {
		return nil
	}
	p.kill9()
	return fmt.Errorf("%s: did not exit within %v of SIGTERM (killed)", p.name, d)
}

// exitStatus describes how the last incarnation ended.
func (p *proc) exitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waitErr == nil {
		return "exit 0"
	}
	return p.waitErr.Error()
}

// destroy kills the whole process group (time and program), for cleanup.
func (p *proc) destroy() {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	p.wait(5 * time.Second)
}

// peakRSSKB is the largest peak RSS over the finished incarnations, in KiB.
func (p *proc) peakRSSKB() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m int64
	for _, v := range p.rssKB {
		m = max(m, v)
	}
	return m
}

// logTail returns the last n lines of the program's log.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// parseTimeRSS reads "Maximum resident set size (kbytes): N" from the
// output of GNU time -v.
func parseTimeRSS(path string) int64 {
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

// waitListening waits until addr accepts TCP connections, failing early if
// p exits first.
func waitListening(ctx context.Context, p *proc, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p != nil && !p.running() {
			return fmt.Errorf("%s exited (%s) before listening on %s; last lines of %s:\n%s",
				p.name, p.exitStatus(), addr, p.logPath, p.logTail(15))
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
		name = fmt.Sprintf("%s on %s; last lines of %s:\n%s", p.name, addr, p.logPath, p.logTail(15))
	}
	return errors.New("timed out waiting for " + name)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
