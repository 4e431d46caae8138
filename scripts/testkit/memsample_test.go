package testkit

import (
	"os"
	"testing"
	"time"
)

// TestMemory reads this process's own status: every part is there, and the
// peak resident set holds at least the anonymous part of the current one.
func TestMemory(t *testing.T) {
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if m.RssAnon <= 0 || m.RssFile <= 0 || m.VmHWM < m.RssAnon {
		t.Fatalf("implausible %+v", m)
	}
	s := SampleMemory(os.Getpid(), time.Millisecond)
	ballast := make([]byte, 8<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	time.Sleep(20 * time.Millisecond)
	peak := s.Stop()
	if peak.RssAnon < m.RssAnon+4<<10 {
		t.Errorf("peak RssAnon %d KiB after touching 8 MiB, was %d KiB", peak.RssAnon, m.RssAnon)
	}
	if _, err := ReadMemory(-1); err == nil {
		t.Error("no error for a process that does not exist")
	}
	_ = ballast[len(ballast)-1]
}
