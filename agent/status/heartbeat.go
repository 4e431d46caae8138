package status

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

// DefaultInterval is how often the heartbeat is published when nothing
// changes (status_interval).
const DefaultInterval = time.Minute

// Defaults of the Reporter's timing; both shrink with a short interval
// (see NewReporter).
const (
	// DefaultCheckEvery is how often the Reporter looks for a change.
	DefaultCheckEvery = 5 * time.Second
	// DefaultMinGap is the least time between two heartbeats a change
	// triggers, so a flapping sensor cannot flood a metered link.
	DefaultMinGap = 15 * time.Second
)

// downAfter is how many failed reads in a row make a sensor's state news:
// a DHT22's occasional CRC error is not.
const downAfter = 3

// Sources are where a heartbeat's fields come from. A nil func or an
// empty string leaves its fields out.
type Sources struct {
	Agent    string    // the agent's version
	Delivery string    // "kafka" or "broker"
	Started  time.Time // when the agent started; zero: when NewReporter ran

	// Config is the configuration in force.
	Config func() heartbeat.Config
	// Buffer is the buffer's Stats (Held filled by the buffer's hold).
	Buffer func() (buffer.Stats, error)
	// BufferDir is the directory of the buffer's file, for the free disk
	// space.
	BufferDir string
	// Delivery reports the publisher's unconfirmed readings (kafka).
	Unconfirmed func() Unconfirmed
	// Clock reports the agent's clock.
	Clock func() Clock
	// Health is each sensor's health (agent/health's Board).
	Health interface {
		Snapshot() (map[string]health.Sensor, uint64)
	}
	// ConfirmUnsigned reports whether the agent accepts unsigned
	// confirmations.
	ConfirmUnsigned func() bool
	// Update is the last over-the-air update's stage; nil: updates off.
	Update func() *heartbeat.Update
	// SysfsRoot is where the CPU temperature and the Raspberry Pi
	// firmware's throttle flags are read; empty: not read.
	SysfsRoot string
}

// Unconfirmed is the publisher's view of what waits for a confirmation.
type Unconfirmed struct {
	N           int
	Oldest      time.Time // first publish of the oldest unconfirmed reading
	LastConfirm time.Time // zero: none since the agent started
}

// Clock is the agent's clock as the heartbeat tells it.
type Clock struct {
	Synced bool
	Step   time.Duration // how far the sync moved the timeline
	Boot   time.Time     // when the machine booted
}

// ReporterOptions tune a Reporter; zero values are the defaults.
type ReporterOptions struct {
	Interval   time.Duration // DefaultInterval
	CheckEvery time.Duration // DefaultCheckEvery, at most Interval/4
	MinGap     time.Duration // DefaultMinGap, at most Interval/2
	Logger     *slog.Logger
}

// Reporter builds the agent's heartbeat (buffer/heartbeat) and says when
// it is due: every interval, and soon after a change worth telling (see
// Due). It is what the MQTT publisher asks for the retained status
// message. Safe for concurrent use.
type Reporter struct {
	src Sources
	log *slog.Logger

	mu       sync.Mutex
	o        ReporterOptions
	sent     sent
	forced   uint64        // Changed calls
	kick     chan struct{} // closed by Changed and SetInterval
	errsSeen map[string]bool
}

// sent is what the last heartbeat said, to tell news from repetition.
type sent struct {
	at                time.Time
	key               key
	drops, damaged    uint64
	dropping, damages bool // the last heartbeat saw new drops (damage) since the one before
}

// key is the part of a heartbeat whose change is news.
type key struct {
	bufferErr bool
	synced    bool
	holding   bool
	sensors   string // name=state per sensor; "down" after downAfter failures in a row
	throttle  string // flags set now
	config    heartbeat.Config
	unsigned  bool
	update    heartbeat.Update // the over-the-air update's stage
	forced    uint64           // Changed calls when it was built
}

// NewReporter returns a Reporter reading src.
func NewReporter(src Sources, o ReporterOptions) *Reporter {
	if src.Started.IsZero() {
		src.Started = time.Now()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reporter{src: src, log: o.Logger, kick: make(chan struct{}), errsSeen: map[string]bool{}}
	r.o = withDefaults(o)
	return r
}

func withDefaults(o ReporterOptions) ReporterOptions {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = min(DefaultCheckEvery, o.Interval/4)
	}
	if o.MinGap <= 0 {
		o.MinGap = min(DefaultMinGap, o.Interval/2)
	}
	return o
}

// SetInterval changes the interval (status_interval) in place; the check
// and the gap are derived from it again unless they were set.
func (r *Reporter) SetInterval(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.o.Interval, r.o.CheckEvery, r.o.MinGap = d, 0, 0
	r.o = withDefaults(r.o)
	r.wakeLocked()
}

// Interval is the interval in force.
func (r *Reporter) Interval() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.o.Interval
}

// Changed makes the heartbeat due now (a new config applied, say).
func (r *Reporter) Changed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forced++
	r.wakeLocked()
}

func (r *Reporter) wakeLocked() {
	close(r.kick)
	r.kick = make(chan struct{})
}

// Status returns the heartbeat for state (heartbeat.Online or Offline)
// and records it as sent: Due counts the interval from now.
func (r *Reporter) Status(state string) []byte {
	// The Changed calls counted before the build: one made while this
	// heartbeat is built (an update's stages follow each other within
	// milliseconds) makes the next one due at once.
	r.mu.Lock()
	forced := r.forced
	r.mu.Unlock()
	h, k, c := r.build(state)
	r.mu.Lock()
	k.forced = forced
	r.sent = sent{at: time.Now(), key: k, drops: c.drops, damaged: c.damaged,
		dropping: c.drops > r.sent.drops && !r.sent.at.IsZero(),
		damages:  c.damaged > r.sent.damaged && !r.sent.at.IsZero()}
	r.mu.Unlock()
	return heartbeat.Encode(&h)
}

// Will returns the last will: offline, with the fields fixed at start and
// the status interval, by which the cloud judges the device's silence
// after it. It has no ts: it is built at connect, and the broker sends it
// whenever the connection ends.
func (r *Reporter) Will() []byte {
	h := heartbeat.Heartbeat{State: heartbeat.Offline, Agent: r.src.Agent, Delivery: r.src.Delivery,
		StatusInterval: int64(r.Interval() / time.Second)}
	if r.src.Config != nil {
		c := r.src.Config()
		h.Config = &c
	}
	if r.src.Clock != nil {
		h.Boot = heartbeat.Unix(r.src.Clock().Boot)
	}
	return heartbeat.Encode(&h)
}

// Due blocks until the heartbeat should be published again, or ctx ends
// (its error). It is due Interval after the last Status, and MinGap after
// it when something worth telling changed since: the buffer became
// unreadable, the clock synced, readings started or stopped being held for
// the clock, a sensor failed downAfter reads in a row or recovered, the
// throttle flags set now changed, the config or the acceptance of
// unsigned confirmations changed, the buffer started dropping readings or
// found damaged ones. Changes are looked for every CheckEvery. After
// Changed it is due at once.
func (r *Reporter) Due(ctx context.Context) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for ctx.Err() == nil {
		r.mu.Lock()
		o, s, kick, forced := r.o, r.sent, r.kick, r.forced
		r.mu.Unlock()
		since := time.Since(s.at)
		if since >= o.Interval || forced != s.key.forced {
			return nil
		}
		if since >= o.MinGap && r.news(s, forced) {
			return nil
		}
		wait := min(o.Interval-since, o.CheckEvery)
		if since < o.MinGap {
			wait = min(wait, o.MinGap-since)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-kick:
		}
	}
	return ctx.Err()
}

// news reports whether the heartbeat now says something s did not.
func (r *Reporter) news(s sent, forced uint64) bool {
	_, k, c := r.build(heartbeat.Online)
	if k.forced = forced; k != s.key {
		return true
	}
	return c.drops > s.drops && !s.dropping || c.damaged > s.damaged && !s.damages
}

// counters are the buffer's loss counters a heartbeat reports.
type counters struct{ drops, damaged uint64 }

// build assembles the heartbeat for state from the sources.
func (r *Reporter) build(state string) (heartbeat.Heartbeat, key, counters) {
	now := time.Now()
	src := &r.src
	h := heartbeat.Heartbeat{State: state, TS: now.Unix(), Agent: src.Agent, Delivery: src.Delivery,
		Uptime: int64(now.Sub(src.Started) / time.Second), StatusInterval: int64(r.Interval() / time.Second)}
	var k key
	var c counters
	if src.Config != nil {
		cfg := src.Config()
		h.Config, k.config = &cfg, cfg
	}
	if src.Clock != nil {
		cl := src.Clock()
		h.Boot = heartbeat.Unix(cl.Boot)
		h.Clock = &heartbeat.Clock{Synced: cl.Synced, Step: cl.Step.Round(time.Millisecond).Seconds()}
		k.synced = cl.Synced
	}
	if src.ConfirmUnsigned != nil {
		h.ConfirmUnsigned = src.ConfirmUnsigned()
		k.unsigned = h.ConfirmUnsigned
	}
	if src.Buffer != nil {
		st, err := src.Buffer()
		if err != nil {
			k.bufferErr = true
			r.logOnce("buffer stats for the heartbeat", err)
		} else {
			h.Buffer = bufferOf(st, now)
			k.holding = st.Held > 0
			c = counters{drops: st.DroppedBytes + st.DroppedAge, damaged: st.Damaged}
		}
	}
	if h.Buffer != nil && src.BufferDir != "" {
		free, err := diskFree(src.BufferDir)
		if err != nil {
			r.logOnce("free disk space for the heartbeat", err)
		}
		h.Buffer.DiskFree = free
	}
	if h.Buffer != nil && src.Unconfirmed != nil {
		u := src.Unconfirmed()
		h.Buffer.Unconfirmed = uint64(max(u.N, 0))
		if u.N > 0 && !u.Oldest.IsZero() {
			h.Buffer.UnconfirmedAge = int64(max(now.Sub(u.Oldest), 0) / time.Second)
		}
		h.Buffer.LastConfirm = heartbeat.Unix(u.LastConfirm)
	}
	if src.Update != nil {
		if h.Update = src.Update(); h.Update != nil {
			k.update = *h.Update
		}
	}
	if src.SysfsRoot != "" {
		h.Host, k.throttle = r.host(src.SysfsRoot)
	}
	if src.Health != nil {
		h.Sensors, k.sensors = sensorsOf(src.Health)
	}
	return h, k, c
}

func bufferOf(st buffer.Stats, now time.Time) *heartbeat.Buffer {
	b := &heartbeat.Buffer{Readings: st.Count, Bytes: st.LiveBytes, Held: st.Held, Damaged: st.Damaged, Folded: st.Folded}
	if st.Count > 0 && !st.OldestTS.IsZero() {
		b.OldestAge = int64(max(now.Sub(st.OldestTS), 0) / time.Second)
	}
	for reason, n := range map[string]uint64{heartbeat.DropMaxBytes: st.DroppedBytes, heartbeat.DropMaxAge: st.DroppedAge} {
		if n > 0 {
			if b.Drops == nil {
				b.Drops = map[string]uint64{}
			}
			b.Drops[reason] = n
		}
	}
	return b
}

// host reads the machine's temperature and throttle flags, and returns the
// flags set now for the change key.
func (r *Reporter) host(root string) (*heartbeat.Host, string) {
	var h heartbeat.Host
	temp, err := CPUTemp(root)
	if err != nil {
		r.logOnce("CPU temperature", err)
	} else if temp != nil {
		h.TempC = temp
	}
	th, err := ReadThrottle(root)
	if err != nil {
		r.logOnce("throttle flags", err)
	}
	h.Throttle = th
	now := ""
	if th != nil {
		now = strings.Join(th.Now, ",")
	}
	if h.TempC == nil && h.Throttle == nil {
		return nil, now
	}
	return &h, now
}

func sensorsOf(board interface {
	Snapshot() (map[string]health.Sensor, uint64)
}) (map[string]heartbeat.Sensor, string) {
	snap, _ := board.Snapshot()
	if len(snap) == 0 {
		return nil, ""
	}
	out := make(map[string]heartbeat.Sensor, len(snap))
	var k strings.Builder
	for _, name := range slices.Sorted(maps.Keys(snap)) {
		s := snap[name]
		hs := heartbeat.Sensor{State: s.State, Fails: s.ConsecutiveFailures, LastGood: heartbeat.Unix(s.LastGood),
			ErrClass: string(s.LastErrorClass), ErrAt: heartbeat.Unix(s.LastErrorAt), Suppressed: s.Suppressed}
		state := s.State
		if s.State == health.StateFailing {
			hs.Err = s.LastError
			state = health.StateOK // a failure or two in a row is not news yet
			if s.ConsecutiveFailures >= downAfter {
				state = "down/" + string(s.LastErrorClass)
			}
		}
		out[name] = hs
		fmt.Fprintf(&k, "%s=%s;", name, state)
	}
	return out, k.String()
}

// logOnce logs a source's error the first time it is seen, so a missing
// or garbled file does not log every heartbeat.
func (r *Reporter) logOnce(what string, err error) {
	msg := what + ": " + err.Error()
	r.mu.Lock()
	seen := r.errsSeen[msg]
	if !seen && len(r.errsSeen) < 64 {
		r.errsSeen[msg] = true
	}
	r.mu.Unlock()
	if !seen {
		r.log.Warn("heartbeat: a field is left out", "field", what, "err", err)
	}
}
