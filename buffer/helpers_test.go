package buffer_test

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// newLogger returns a debug logger and what it wrote, for the buffer's goroutines.
func newLogger() (*slog.Logger, *testkit.LogBuffer) {
	s := &testkit.LogBuffer{}
	return s.Logger(), s
}

// fakeClock is a settable clock for MaxAge tests.
type fakeClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
