package daemon

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// TestLimitHandler: a flood of one error message becomes one line per
// interval, carrying how many were dropped; other messages, other scopes
// and INFO lines pass.
func TestLimitHandler(t *testing.T) {
	var out testkit.LogBuffer
	log := slog.New(newLimitHandler(slog.NewTextHandler(&out, nil), time.Hour))
	buf := log.With("component", "buffer")
	for range 700 { // 10 s of a full disk at 70 appends a second
		buf.Error("buffer commit failed; reloading from disk", "err", "no space left on device")
	}
	buf.Warn("buffer over max_bytes: dropped oldest readings")
	log.With("component", "other").Error("buffer commit failed; reloading from disk")
	for range 3 {
		buf.Info("an info line")
	}
	s := out.String()
	for _, c := range []struct {
		sub, and string
		want     int
	}{
		{"buffer commit failed", "component=buffer", 1},
		{"buffer commit failed", "component=other", 1},
		{"dropped oldest readings", "", 1},
		{"an info line", "", 3},
	} {
		n := 0
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, c.sub) && strings.Contains(l, c.and) {
				n++
			}
		}
		if n != c.want {
			t.Errorf("%d lines with %q and %q, want %d:\n%s", n, c.sub, c.and, c.want, s)
		}
	}

	// Once the interval has passed the next one goes out, saying how many
	// were not logged.
	var out2 testkit.LogBuffer
	l := slog.New(newLimitHandler(slog.NewTextHandler(&out2, nil), 50*time.Millisecond))
	for range 10 {
		l.Error("flood")
	}
	time.Sleep(60 * time.Millisecond)
	l.Error("flood")
	if s := out2.String(); strings.Count(s, "msg=flood") != 2 || !strings.Contains(s, "not_logged=9") {
		t.Fatalf("after the interval:\n%s", s)
	}
}
