package proc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit/proc"
)

func TestParseTimeRSS(t *testing.T) {
	if got := proc.ParseTimeRSS("testdata/time-v.txt"); got != 33104 {
		t.Fatalf("ParseTimeRSS = %d KiB, want 33104", got)
	}
	if got := proc.ParseTimeRSS("testdata/absent"); got != 0 {
		t.Fatalf("ParseTimeRSS(absent) = %d, want 0", got)
	}
}

// TestRestartAppendsAndStops: two incarnations share one log, a stop ends
// the program, and ExitErr tells a failure from a clean exit.
func TestRestartAppendsAndStops(t *testing.T) {
	log := filepath.Join(t.TempDir(), "p.log")
	p := &proc.Proc{Name: "sleeper", Argv: []string{"sh", "-c", "echo up; exec sleep 30"}, LogPath: log}
	for i := range 2 {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(p.LogTail(100), "up") < i+1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := p.Stop(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if p.Running() {
			t.Fatal("running after Stop")
		}
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "==== start #"); n != 2 {
		t.Fatalf("%d start headers in the log, want 2:\n%s", n, b)
	}
	if p.ExitErr() == nil {
		t.Fatal("ExitErr = nil for a program ended by SIGTERM")
	}
	ok := &proc.Proc{Name: "true", Argv: []string{"true"}, LogPath: log}
	if err := ok.Start(); err != nil {
		t.Fatal(err)
	}
	<-ok.Done()
	if err := ok.ExitErr(); err != nil {
		t.Fatalf("ExitErr = %v for exit 0", err)
	}
}

// TestCPUTime: a busy program's CPU time grows; a stopped one reads 0.
func TestCPUTime(t *testing.T) {
	p := &proc.Proc{Name: "spinner", Argv: []string{"sh", "-c", "while :; do :; done"}, LogPath: filepath.Join(t.TempDir(), "p.log")}
	if got := p.CPUTime(); got != 0 {
		t.Fatalf("CPUTime before Start = %v, want 0", got)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Destroy)
	deadline := time.Now().Add(10 * time.Second)
	for p.CPUTime() < 20*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("CPUTime of a busy loop still %v after 10s", p.CPUTime())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
