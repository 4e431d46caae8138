package health_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/drivers/fault"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestBoardCountsAndResets(t *testing.T) {
	var b health.Board
	b.Track([]string{"ds-1", "sim-1"})
	crc := fmt.Errorf("ds18b20 ds-1: %w", fault.Mark(fault.CRC, errors.New(`crc=a2 NO`)))
	steps := []struct {
		good bool
		err  error
		want health.Sensor
	}{
		{err: crc, want: health.Sensor{State: "failing", ConsecutiveFailures: 1, LastErrorClass: fault.CRC, LastError: crc.Error(), LastErrorAt: t0}},
		{err: crc, want: health.Sensor{State: "failing", ConsecutiveFailures: 2, LastErrorClass: fault.CRC, LastError: crc.Error(), LastErrorAt: t0.Add(time.Minute)}},
		{good: true, want: health.Sensor{State: "ok", LastGood: t0.Add(2 * time.Minute), LastErrorClass: fault.CRC, LastError: crc.Error(), LastErrorAt: t0.Add(time.Minute)}},
		{err: errors.New("garbage"), want: health.Sensor{State: "failing", ConsecutiveFailures: 1, LastGood: t0.Add(2 * time.Minute), LastErrorClass: fault.Other, LastError: "garbage", LastErrorAt: t0.Add(3 * time.Minute)}},
	}
	for i, st := range steps {
		at := t0.Add(time.Duration(i) * time.Minute)
		if st.good {
			b.Good("ds-1", at)
		} else if c := b.Fail("ds-1", at, st.err); c != st.want.LastErrorClass {
			t.Fatalf("step %d: Fail returned class %q, want %q", i, c, st.want.LastErrorClass)
		}
		got, _ := b.Snapshot()
		if got["ds-1"] != st.want {
			t.Fatalf("step %d: %+v\nwant %+v", i, got["ds-1"], st.want)
		}
		if got["sim-1"] != (health.Sensor{State: "unknown"}) {
			t.Fatalf("step %d: untouched sensor is %+v", i, got["sim-1"])
		}
	}
}

func TestTrackKeepsHistoryOfKeptSensors(t *testing.T) {
	var b health.Board
	b.Track([]string{"a", "b"})
	b.Good("a", t0)
	b.Fail("b", t0, fault.ErrTimeout)
	b.Track([]string{"a", "c"}) // a reload: b removed, c added
	got, _ := b.Snapshot()
	want := map[string]health.Sensor{
		"a": {State: "ok", LastGood: t0},
		"c": {State: "unknown"},
	}
	if len(got) != len(want) || got["a"] != want["a"] || got["c"] != want["c"] {
		t.Fatalf("after reload: %+v, want %+v", got, want)
	}
}

// TestVersion: the version moves on news (a failure, a recovery, a new
// set of sensors) and not on a good read after a good read, so the status
// message is not republished while all is well.
func TestVersion(t *testing.T) {
	var b health.Board
	version := func() uint64 { _, v := b.Snapshot(); return v }
	steps := []struct {
		name    string
		do      func()
		changed bool
	}{
		{"track", func() { b.Track([]string{"a"}) }, true},
		{"first good read", func() { b.Good("a", t0) }, true},
		{"another good read", func() { b.Good("a", t0.Add(time.Second)) }, false},
		{"failure", func() { b.Fail("a", t0, fault.ErrCRC) }, true},
		{"another failure", func() { b.Fail("a", t0, fault.ErrCRC) }, true},
		{"recovery", func() { b.Good("a", t0) }, true},
		{"good again", func() { b.Good("a", t0) }, false},
	}
	for _, st := range steps {
		before := version()
		st.do()
		if changed := version() != before; changed != st.changed {
			t.Fatalf("%s: version changed = %v, want %v", st.name, changed, st.changed)
		}
	}
}

func TestNilBoardRecordsNothing(t *testing.T) {
	var b *health.Board
	b.Track([]string{"a"})
	b.Good("a", t0)
	if c := b.Fail("a", t0, fault.ErrAbsent); c != fault.Absent {
		t.Fatalf("nil board: Fail returned %q, want the class all the same", c)
	}
}

func TestLongMessageCut(t *testing.T) {
	var b health.Board
	msg := strings.Repeat("é", health.MaxMessage) // 2 bytes each
	b.Fail("a", t0, errors.New(msg))
	got, _ := b.Snapshot()
	if m := got["a"].LastError; len(m) > health.MaxMessage || !utf8.ValidString(m) || !strings.HasSuffix(m, "…") {
		t.Fatalf("message of %d bytes (valid UTF-8 %v): %q", len(m), utf8.ValidString(m), m)
	}
}

// TestConcurrentUse: poll loops write while scrapes and the publisher
// read (run with -race).
func TestConcurrentUse(t *testing.T) {
	var b health.Board
	b.Track([]string{"a", "b"})
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		wg.Go(func() {
			for i := range 500 {
				if i%3 == 0 {
					b.Fail(name, t0, fault.ErrCRC)
				} else {
					b.Good(name, t0)
				}
			}
		})
	}
	wg.Go(func() {
		for range 500 {
			s, _ := b.Snapshot()
			for _, h := range s {
				if h.State == "failing" && h.ConsecutiveFailures == 0 {
					t.Error("failing with 0 consecutive failures")
					return
				}
			}
		}
	})
	wg.Wait()
}

func TestHandler(t *testing.T) {
	var b health.Board
	b.Track([]string{"ds-1"})
	b.Fail("ds-1", t0, fmt.Errorf("ds18b20 ds-1: %w", fault.New(fault.PowerOn, "power-on reset value 85 °C")))
	rec := httptest.NewRecorder()
	health.Handler(&b).ServeHTTP(rec, httptest.NewRequest("GET", "/sensors", nil))
	var rep health.Report
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, rec.Body.String())
	}
	want := `{"sensors":{"ds-1":{"state":"failing","consecutive_failures":1,"last_error_class":"power_on","last_error":"ds18b20 ds-1: power-on reset value 85 °C","last_error_at":"2026-11-25T10:00:00Z"}}}`
	if got := strings.TrimSpace(rec.Body.String()); got != want {
		t.Fatalf("GET /sensors = %s\nwant %s", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}
