package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// MemoryCgroup is a memory cgroup made for one test, under the cgroup the
// test runs in, with a hard limit: what systemd's MemoryMax= sets for a
// unit. It works with cgroup v2 (memory.max) and with the v1 memory
// controller (memory.limit_in_bytes), whichever holds the memory
// controller here. Either counts the process's anonymous memory and the
// page cache it brings in (a mapped bbolt file), and reclaims clean page
// cache before it kills anything.
type MemoryCgroup struct {
	Dir     string // the cgroup's directory
	Version int    // 1 or 2
}

// ErrNoMemoryCgroup is returned when no writable memory cgroup is available
// (not root, a read-only /sys/fs/cgroup, no memory controller).
var ErrNoMemoryCgroup = errors.New("no writable memory cgroup")

// NewMemoryCgroup makes the cgroup with a limit of max bytes and removes
// it when the test ends (its processes must have exited by then). It skips
// the test, saying why, when the machine does not allow it.
func NewMemoryCgroup(tb testing.TB, max int64) *MemoryCgroup {
	tb.Helper()
	cg, err := makeMemoryCgroup(fmt.Sprintf("sensorpipe-test-%d", os.Getpid()), max)
	if err != nil {
		tb.Skipf("skipping: %v (needs root and a writable cgroup v2 or v1 memory controller)", err)
	}
	tb.Cleanup(func() { _ = os.Remove(cg.Dir) })
	return cg
}

func makeMemoryCgroup(name string, max int64) (*MemoryCgroup, error) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoMemoryCgroup, err)
	}
	var v1, v2 string
	for _, l := range strings.Split(strings.TrimSpace(string(self)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case strings.Contains(","+parts[1]+",", ",memory,"):
			v1 = parts[2]
		}
	}
	type candidate struct {
		version       int
		dir, limitKey string
	}
	var tries []candidate
	if v2 != "" {
		if ctl, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(" "+strings.TrimSpace(string(ctl))+" ", " memory ") {
			tries = append(tries, candidate{2, filepath.Join("/sys/fs/cgroup", v2, name), "memory.max"})
		}
	}
	if v1 != "" {
		tries = append(tries, candidate{1, filepath.Join("/sys/fs/cgroup/memory", v1, name), "memory.limit_in_bytes"})
	}
	var errs []error
	for _, t := range tries {
		if err := os.Mkdir(t.dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.WriteFile(filepath.Join(t.dir, t.limitKey), []byte(strconv.FormatInt(max, 10)), 0o644); err != nil {
			_ = os.Remove(t.dir)
			errs = append(errs, err)
			continue
		}
		return &MemoryCgroup{Dir: t.dir, Version: t.version}, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrNoMemoryCgroup, errors.Join(errs...))
}

// JoinScript is a shell prefix that moves the shell into the cgroup before
// it execs the program: sh -c JoinScript+`exec "$0" "$@"` prog args...
// starts prog inside the cgroup from its first instruction.
func (c *MemoryCgroup) JoinScript() string {
	return "echo $$ > " + filepath.Join(c.Dir, "cgroup.procs") + " && "
}

// Usage is what the cgroup reports: the peak of its charged memory (anon
// plus page cache) and how many times the kernel's OOM killer ran in it.
type Usage struct {
	PeakBytes int64
	OOMKills  int64
}

// Usage reads the cgroup's counters.
func (c *MemoryCgroup) Usage() (Usage, error) {
	var u Usage
	var err error
	if c.Version == 2 {
		if u.PeakBytes, err = readInt(filepath.Join(c.Dir, "memory.peak")); err != nil {
			return u, err
		}
		u.OOMKills, err = keyed(filepath.Join(c.Dir, "memory.events"), "oom_kill")
		return u, err
	}
	if u.PeakBytes, err = readInt(filepath.Join(c.Dir, "memory.max_usage_in_bytes")); err != nil {
		return u, err
	}
	u.OOMKills, err = keyed(filepath.Join(c.Dir, "memory.oom_control"), "oom_kill")
	return u, err
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// keyed reads "key value" from a flat-keyed cgroup file; 0 when absent.
func keyed(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == key {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, sc.Err()
}
