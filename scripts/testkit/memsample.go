package testkit

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Memory is what /proc/PID/status says about a process's resident memory,
// in KiB: VmHWM is the peak resident set the kernel recorded; RssAnon is
// memory the process allocated itself (heap, stacks); RssFile is mapped
// files (the binary's pages, a bbolt file), which the kernel can drop and
// read again.
type Memory struct {
	VmHWM, RssAnon, RssFile int64
}

// ReadMemory reads pid's /proc/PID/status (Linux).
func ReadMemory(pid int) (Memory, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, l := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmHWM":
			m.VmHWM = n
		case "RssAnon":
			m.RssAnon = n
		case "RssFile":
			m.RssFile = n
		}
	}
	return m, nil
}

// MemorySampler reads a process's memory every interval until Stop: the
// kernel keeps a peak only for the whole resident set (VmHWM), so the peaks
// of its parts are sampled.
type MemorySampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	peak Memory
}

// SampleMemory starts sampling pid every interval.
func SampleMemory(pid int, interval time.Duration) *MemorySampler {
	s := &MemorySampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if m, err := ReadMemory(pid); err == nil {
				s.mu.Lock()
				s.peak.VmHWM = max(s.peak.VmHWM, m.VmHWM)
				s.peak.RssAnon = max(s.peak.RssAnon, m.RssAnon)
				s.peak.RssFile = max(s.peak.RssFile, m.RssFile)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Peak returns the peaks seen so far (each part's own peak; they need not
// be simultaneous).
func (s *MemorySampler) Peak() Memory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// Stop ends the sampling (call it before the process exits, or the last
// samples are lost) and returns the peaks.
func (s *MemorySampler) Stop() Memory {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return s.Peak()
}
