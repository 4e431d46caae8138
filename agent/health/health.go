// Package health keeps each sensor's health as the agent's poll loops see
// it: how many reads in a row failed, when the last good read was, and the
// class (drivers/fault) and message of the last failure. The poller writes
// it; the metrics, the retained status message and `edge-agent sensors`
// (through the status endpoint) read it, so a dashboard shows a dead probe
// without anyone logging into the Pi.
//
// A Board is safe for concurrent use; the agent shares one across the poll
// loops of a process (a reload keeps the history of the sensors it keeps).
// It does not read sensors, count metrics or publish anything itself.
//
//	var b health.Board
//	b.Track([]string{"ds18b20-1"})
//	b.Fail("ds18b20-1", now, err) // returns fault.Of(err)
//	b.Good("ds18b20-1", now)
//	sensors, version := b.Snapshot()
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// States of a sensor.
const (
	StateOK      = "ok"      // the last read was good
	StateFailing = "failing" // the last read (or open) failed
	StateUnknown = "unknown" // not read yet
)

// MaxMessage bounds the stored error message, in bytes: it travels in the
// retained status message.
const MaxMessage = 200

// Sensor is one sensor's health: an entry of the status message's
// "sensors" object, of GET /sensors on the status endpoint and of
// `edge-agent sensors --json`.
type Sensor struct {
	// State is "ok", "failing" or "unknown" (not read yet).
	State string `json:"state"`
	// ConsecutiveFailures counts the failed opens and reads since the
	// last good read; 0 when the last read was good.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// LastGood is when the last good read was taken, by the agent's
	// clock (the readings' timeline, not yet NTP-synced early after
	// boot); zero if never.
	LastGood time.Time `json:"last_good,omitzero"`
	// LastErrorClass is the class of the last failure (absent, crc,
	// timeout, out_of_range, power_on, other), kept after a recovery
	// until the next failure; empty if none.
	LastErrorClass fault.Class `json:"last_error_class,omitempty"`
	// LastError is the last failure's message, cut to MaxMessage bytes.
	LastError string `json:"last_error,omitempty"`
	// LastErrorAt is when the last failure happened; zero if never.
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Suppressed counts good reads the sensor's deadband kept out of the
	// buffer since the agent started.
	Suppressed uint64 `json:"suppressed,omitempty"`
}

// Board holds the health of the tracked sensors. The zero value is ready;
// a nil *Board records nothing.
type Board struct {
	mu      sync.Mutex
	sensors map[string]*Sensor
	version uint64
}

// Track sets the sensors the board reports: new names start unknown,
// names already tracked keep their history, others are dropped.
func (b *Board) Track(names []string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	next := make(map[string]*Sensor, len(names))
	for _, n := range names {
		if s, ok := b.sensors[n]; ok {
			next[n] = s
		} else {
			next[n] = &Sensor{State: StateUnknown}
		}
	}
	b.sensors = next
	b.version++
}

// Good records a good read of sensor name taken at at.
func (b *Board) Good(name string, at time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sensor(name)
	if s.State != StateOK {
		b.version++ // a recovery (or a first read) is news; another good read is not
	}
	s.State, s.ConsecutiveFailures, s.LastGood = StateOK, 0, at
}

// Suppressed counts a good read of sensor name that its deadband did not
// store. It is not news: the version does not change.
func (b *Board) Suppressed(name string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sensor(name).Suppressed++
}

// Fail records a failed open or read of sensor name at at, and returns
// the failure's class.
func (b *Board) Fail(name string, at time.Time, err error) fault.Class {
	class := fault.Of(err)
	if b == nil {
		return class
	}
	msg := ""
	if err != nil {
		msg = cut(err.Error(), MaxMessage)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sensor(name)
	s.State = StateFailing
	s.ConsecutiveFailures++
	s.LastErrorClass, s.LastError, s.LastErrorAt = class, msg, at
	b.version++
	return class
}

// sensor returns name's entry, tracking it if it is not yet.
func (b *Board) sensor(name string) *Sensor {
	s, ok := b.sensors[name]
	if !ok {
		if b.sensors == nil {
			b.sensors = map[string]*Sensor{}
		}
		s = &Sensor{State: StateUnknown}
		b.sensors[name] = s
	}
	return s
}

// Snapshot returns a copy of every tracked sensor's health by name, and
// the board's version: it changes when a sensor starts or stops failing,
// fails again, or the tracked set changes, but not on a good read that
// follows a good read, so a caller that republishes on a new version
// stays quiet while all is well.
func (b *Board) Snapshot() (map[string]Sensor, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]Sensor, len(b.sensors))
	for n, s := range b.sensors {
		out[n] = *s
	}
	return out, b.version
}

// Report is the body of GET /sensors on the agent's status endpoint.
type Report struct {
	Sensors map[string]Sensor `json:"sensors"`
}

// Handler serves the board as a JSON Report (mount it at "GET /sensors").
func Handler(b *Board) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		sensors, _ := b.Snapshot()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(Report{Sensors: sensors})
	})
}

// Fetch asks a running agent for its board: GET {statusURL}/sensors, where
// statusURL is like "http://127.0.0.1:9101" (bufhttp.StatusURL). It gives
// up after 5 seconds.
func Fetch(ctx context.Context, statusURL string) (Report, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var rep Report
	u := statusURL + "/sensors"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return rep, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&rep); err != nil {
		return rep, fmt.Errorf("GET %s: %w", u, err)
	}
	return rep, nil
}

// cut shortens s to at most n bytes without splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("…")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
