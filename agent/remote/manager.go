package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
)

// ErrRestart is returned by Manager.Run when a config was persisted that
// the running process cannot apply in place (or a command asked for it):
// the agent exits cleanly and systemd (Restart=always) starts it again
// with that config.
var ErrRestart = errors.New("restart requested")

// Report is the remote config's state, for the heartbeat.
type Report struct {
	// Source is "file" while no remote document is in force, else "remote".
	Source string `json:"source"`
	// Version is the versions in force as "fleet.group.device" (0 for a
	// level without a document), e.g. "3.5.0".
	Version string `json:"version"`
	// State is "ok", "trial" (applied, within its grace period),
	// "refused" (the last document was refused; the config in force
	// stays) or "rolled_back" (the last applied config failed its grace
	// period and the last one that worked is back).
	State string `json:"state"`
	// Error says why the last document was refused or rolled back.
	Error string `json:"error,omitempty"`
	// At is when State last changed.
	At time.Time `json:"at,omitzero"`
}

// Report states.
const (
	StateOK         = "ok"
	StateTrial      = "trial"
	StateRefused    = "refused"
	StateRolledBack = "rolled_back"
)

// Applier is how the manager changes the running agent.
type Applier interface {
	// Apply switches the running agent to next in place, or reports that
	// it cannot (restart true: nothing was changed).
	Apply(ctx context.Context, next *config.Config) (restart bool, err error)
	// Stored returns nil when a reading was taken and stored since t, or
	// why not (no sensor read, the buffer refuses appends).
	Stored(since time.Time) error
}

// Options configures a Manager.
type Options struct {
	Local    *config.Config // the local file's config
	Verifier Verifier       // the pinned fleet keys
	StateDir string         // where StateFile is kept
	Logger   *slog.Logger
	// OnChange is called (without locks held) when the Report changes.
	OnChange func()
}

// Manager receives config documents, layers, validates, applies and
// persists them, and rolls back a config that does not work. Create it
// with New, run Run once, feed it with Offer.
type Manager struct {
	o      Options
	log    *slog.Logger
	path   string
	offers chan offer

	mu      sync.Mutex
	st      state         // written by New and Run only
	trialAt time.Time     // when the current trial started (this process)
	grace   time.Duration // of the config on trial
}

type offer struct {
	level   Level
	payload []byte
}

// New loads the persisted state and returns the config to start with:
// the local file layered with the documents in force, or with the last
// set that worked when the current one does not validate (or made the
// agent restart three times during its trial).
func New(o Options) (*Manager, *config.Config, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{o: o, log: o.Logger, path: filepath.Join(o.StateDir, StateFile), offers: make(chan offer, 8)}
	if err := loadJSON(m.path, &m.st); err != nil {
		m.log.Warn("fleet config state unreadable; starting from the local file", "err", err)
		m.st = state{}
	}
	m.st.V = 1
	cur := m.verified(m.st.Current)
	good := m.verified(m.st.Good)
	start, err := m.effective(cur)
	switch {
	case err != nil:
		m.log.Error("fleet config in force does not apply to this device; using the last config that worked", "err", err)
		m.st.Current, m.st.Trial, m.st.Starts = m.st.Good, false, 0
		m.setReport(StateRolledBack, err.Error())
		start, err = m.effective(good)
		if err != nil {
			m.st.Current, m.st.Good = nil, nil
			start = o.Local
		}
	case m.st.Trial && m.st.Starts >= 2:
		why := fmt.Sprintf("the agent restarted %d times while trying config %s", m.st.Starts+1, versionOf(cur))
		m.log.Error("fleet config rolled back", "reason", why)
		m.markRefused(cur, good)
		m.st.Current, m.st.Trial, m.st.Starts = m.st.Good, false, 0
		m.setReport(StateRolledBack, why)
		if start, err = m.effective(good); err != nil {
			m.st.Current, m.st.Good = nil, nil
			start = o.Local
		}
	case m.st.Trial:
		m.st.Starts++
	}
	if len(m.st.Current) == 0 {
		m.st.Report.Source = "file"
	}
	m.st.Report.Version = versionOf(m.verified(m.st.Current))
	if m.st.Report.State == "" {
		m.st.Report.State = StateOK
	}
	if err := saveJSON(m.path, &m.st); err != nil {
		return nil, nil, err
	}
	m.grace = graceFor(o.Local.Fleet.Grace, start)
	return m, start, nil
}

// Report returns the current state for the heartbeat.
func (m *Manager) Report() Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.Report
}

// Offer hands a message from a config topic of level to Run. It does not
// block: when Run is behind, the message is dropped (the topic is
// retained, so it is delivered again at the next connection).
func (m *Manager) Offer(level Level, payload []byte) {
	select {
	case m.offers <- offer{level: level, payload: bytes.Clone(payload)}:
	default:
		m.log.Warn("fleet config message dropped: too many pending", "level", string(level))
	}
}

// Run handles offered documents and watches each applied config for its
// grace period until ctx ends. It returns ErrRestart when the agent must
// restart to apply what it persisted.
func (m *Manager) Run(ctx context.Context, a Applier) error {
	var grace time.Duration
	var check <-chan time.Time
	var ticker *time.Ticker
	startTrial := func() {
		m.mu.Lock()
		m.trialAt = time.Now()
		grace = m.grace
		m.mu.Unlock()
		if ticker != nil {
			ticker.Reset(max(grace/20, 10*time.Millisecond))
		} else {
			ticker = time.NewTicker(max(grace/20, 10*time.Millisecond))
			check = ticker.C
		}
	}
	stopTrial := func() {
		if ticker != nil {
			ticker.Stop()
			ticker, check = nil, nil
		}
	}
	defer stopTrial()
	if m.inTrial() {
		startTrial()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case o := <-m.offers:
			restart, applied, err := m.handle(ctx, a, o)
			if err != nil {
				return err
			}
			if restart {
				return fmt.Errorf("%w: apply fleet config %s", ErrRestart, m.Report().Version)
			}
			if applied {
				startTrial()
			}
		case <-check:
			done, restart, err := m.checkTrial(ctx, a, grace)
			if err != nil {
				return err
			}
			if restart {
				return fmt.Errorf("%w: return to the last config that worked", ErrRestart)
			}
			if done {
				stopTrial()
			}
		}
	}
}

func (m *Manager) inTrial() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.Trial
}

// handle verifies, layers, validates and applies one document. A refusal
// is reported, not returned: only a failure to persist ends Run.
func (m *Manager) handle(ctx context.Context, a Applier, o offer) (restart, applied bool, err error) {
	if len(o.payload) == 0 {
		m.log.Info("cleared fleet config topic ignored; the config in force stays (push a document with an empty config to remove a level's keys)", "level", string(o.level))
		return false, false, nil
	}
	d, err := OpenConfig(o.payload, m.o.Verifier)
	if err == nil {
		err = m.checkTarget(o.level, d)
	}
	if err != nil {
		m.refuse(o.level, d.Version, err)
		return false, false, nil
	}
	m.mu.Lock()
	cur := m.verified(m.st.Current)
	refused := m.st.Refused[o.level]
	m.mu.Unlock()
	if in, ok := cur[o.level]; ok {
		switch {
		case d.Version == in.Version && bytes.Equal(m.st.Current[o.level], o.payload):
			return false, false, nil // the retained copy again
		case d.Version <= in.Version:
			m.refuse(o.level, d.Version, fmt.Errorf("%w: %s version %d, version %d is in force", ErrOldVersion, o.level, d.Version, in.Version))
			return false, false, nil
		}
	}
	if refused != 0 && d.Version <= refused {
		m.log.Debug("fleet config already refused", "level", string(o.level), "version", d.Version)
		return false, false, nil
	}
	next := map[Level]Doc{}
	for l, doc := range cur {
		next[l] = doc
	}
	next[o.level] = d
	cfg, err := m.effective(next)
	if err != nil {
		m.refuse(o.level, d.Version, err)
		m.mu.Lock()
		m.remember(o.level, d.Version)
		err = saveJSON(m.path, &m.st)
		m.mu.Unlock()
		return false, false, err
	}
	m.mu.Lock()
	if !m.st.Trial {
		m.st.Good = m.st.Current
	}
	m.st.Current = cloneRaw(m.st.Current)
	m.st.Current[o.level] = o.payload
	m.st.Trial, m.st.Starts = true, 0
	m.grace = graceFor(m.o.Local.Fleet.Grace, cfg)
	m.st.Report.Source = "remote"
	m.st.Report.Version = versionOf(next)
	m.setReportLocked(StateTrial, "")
	err = saveJSON(m.path, &m.st)
	m.mu.Unlock()
	m.changed()
	if err != nil {
		return false, false, err
	}
	restart, err = a.Apply(ctx, cfg)
	if err != nil {
		// Validated but not applicable in place: keep it for the restart.
		m.log.Warn("fleet config not applied in place; restarting to apply it", "err", err)
		restart = true
	}
	m.log.Info("fleet config accepted", "level", string(o.level), "version", d.Version, "config", versionOf(next), "restart", restart)
	return restart, true, nil
}

// checkTrial ends a trial: done when a reading was stored since the config
// was applied; past the grace period without one, the last config that
// worked comes back.
func (m *Manager) checkTrial(ctx context.Context, a Applier, grace time.Duration) (done, restart bool, err error) {
	m.mu.Lock()
	since := m.trialAt
	m.mu.Unlock()
	serr := a.Stored(since)
	if serr == nil {
		m.mu.Lock()
		m.st.Trial, m.st.Starts = false, 0
		m.st.Good = m.st.Current
		m.setReportLocked(StateOK, "")
		err := saveJSON(m.path, &m.st)
		m.mu.Unlock()
		m.changed()
		m.log.Info("fleet config works", "config", m.Report().Version)
		return true, false, err
	}
	if time.Since(since) < grace {
		return false, false, nil
	}
	why := fmt.Sprintf("config %s stored no reading within %v: %v", m.Report().Version, grace, serr)
	m.log.Error("fleet config rolled back to the last config that worked", "reason", why)
	m.mu.Lock()
	m.markRefused(m.verified(m.st.Current), m.verified(m.st.Good))
	m.st.Current = m.st.Good
	m.st.Trial, m.st.Starts = false, 0
	good := m.verified(m.st.Good)
	m.st.Report.Version = versionOf(good)
	if len(good) == 0 {
		m.st.Report.Source = "file"
	}
	m.setReportLocked(StateRolledBack, why)
	err = saveJSON(m.path, &m.st)
	m.mu.Unlock()
	m.changed()
	if err != nil {
		return true, false, err
	}
	cfg, eerr := m.effective(good)
	if eerr != nil {
		cfg = m.o.Local
	}
	restart, aerr := a.Apply(ctx, cfg)
	if aerr != nil {
		restart = true
	}
	return true, restart, nil
}

// graceFor is how long cfg has to store a reading: fleet.grace, and at
// least three of its longest sensor interval.
func graceFor(grace time.Duration, cfg *config.Config) time.Duration {
	for _, s := range cfg.Sensors {
		grace = max(grace, 3*s.Interval)
	}
	return grace
}

// markRefused remembers the versions of cur that differ from good, so the
// retained documents that failed are not applied again.
func (m *Manager) markRefused(cur, good map[Level]Doc) {
	for l, d := range cur {
		if g, ok := good[l]; !ok || g.Version != d.Version {
			m.remember(l, d.Version)
		}
	}
}

func (m *Manager) remember(l Level, v uint64) {
	if m.st.Refused == nil {
		m.st.Refused = map[Level]uint64{}
	}
	m.st.Refused[l] = max(m.st.Refused[l], v)
}

func (m *Manager) refuse(l Level, version uint64, err error) {
	m.log.Warn("fleet config refused; the config in force stays", "level", string(l), "version", version, "err", err)
	m.mu.Lock()
	m.setReportLocked(StateRefused, fmt.Sprintf("%s version %d: %v", l, version, err))
	m.mu.Unlock()
	m.changed()
}

func (m *Manager) setReport(state, msg string) { m.setReportLocked(state, msg) }

func (m *Manager) setReportLocked(state, msg string) {
	m.st.Report.State, m.st.Report.Error, m.st.Report.At = state, msg, time.Now().UTC()
}

func (m *Manager) changed() {
	if m.o.OnChange != nil {
		m.o.OnChange()
	}
}

func (m *Manager) checkTarget(l Level, d Doc) error {
	want := ""
	switch l {
	case LevelGroup:
		want = m.o.Local.Fleet.Group
	case LevelDevice:
		want = m.o.Local.DeviceID
	}
	if d.Level != l || d.Target != want {
		return fmt.Errorf("%w: document for %s %q arrived on the %s topic of %q", ErrTarget, d.Level, d.Target, l, want)
	}
	return nil
}

// verified opens the stored envelopes again; a level whose document no
// longer verifies (a rotated key) or no longer targets this device (a
// changed fleet.group) is left out.
func (m *Manager) verified(raw map[Level][]byte) map[Level]Doc {
	out := map[Level]Doc{}
	for l, p := range raw {
		d, err := OpenConfig(p, m.o.Verifier)
		if err == nil {
			err = m.checkTarget(l, d)
		}
		if err != nil {
			m.log.Warn("stored fleet config no longer applies; left out", "level", string(l), "err", err)
			continue
		}
		out[l] = d
	}
	return out
}

func (m *Manager) effective(docs map[Level]Doc) (*config.Config, error) {
	var layers []map[string]any
	for _, l := range Levels {
		if d, ok := docs[l]; ok {
			if err := CheckKeys(d.Config); err != nil {
				return nil, fmt.Errorf("%s version %d: %w", l, d.Version, err)
			}
			layers = append(layers, d.Config)
		}
	}
	return Effective(m.o.Local, Merge(layers...))
}

// versionOf formats the versions in force as "fleet.group.device".
func versionOf(docs map[Level]Doc) string {
	var b []byte
	for i, l := range Levels {
		if i > 0 {
			b = append(b, '.')
		}
		b = strconv.AppendUint(b, docs[l].Version, 10)
	}
	return string(b)
}

func cloneRaw(m map[Level][]byte) map[Level][]byte {
	out := make(map[Level][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
