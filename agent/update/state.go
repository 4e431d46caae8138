package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgepipe/sensorpipe/buffer/atomicfile"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

// Files and directories under update.dir.
const (
	StateFile   = "state.json" // State, written atomically
	lockFile    = "state.lock" // flock'd around every read-modify-write of StateFile
	versionsDir = "versions"   // versions/<version>/edge-agent and its manifest
	downloadDir = "download"   // download/<version>.part
	// BinaryName is the staged binary's name in versions/<version>/.
	BinaryName = "edge-agent"
	// ManifestName is the staged signed manifest's name, next to the binary.
	ManifestName = "edge-agent.manifest.json"
)

// StateVersion is the format of state.json this version writes. A version
// reads every format it or its predecessors wrote; a newer one is refused
// (ErrStateVersion) and left as it is.
const StateVersion = 1

// MaxStarts is how many times the launcher starts a version on trial; at
// the next start it rolls back.
const MaxStarts = 3

// State is state.json: which over-the-air version runs, which is on
// trial, which failed. A version "" is the binary the package installed
// (/usr/bin/edge-agent, the launcher itself).
type State struct {
	V int `json:"v"`
	// Committed is the over-the-air version that proved itself; "" none.
	Committed string `json:"committed,omitempty"`
	// Previous is the version Committed replaced ("" the package's), kept
	// on disk for a rollback; older ones are removed at the commit.
	Previous string `json:"previous,omitempty"`
	// Trial is the version installed and not yet committed; nil none.
	Trial *Trial `json:"trial,omitempty"`
	// Failed are the versions that rolled back on this device: never
	// taken again.
	Failed []string `json:"failed,omitempty"`
	// NewestOffer is, by group, the latest issued time of the signed
	// offers seen: an older one is a replay (release.ErrReplayed). A
	// version that does not know the field drops it; the downgrade
	// refusal still stands then.
	NewestOffer map[string]time.Time `json:"newest_offer,omitempty"`
	// PID and Exe are the agent's main process and the binary the
	// launcher exec'd in it, so the guard signals only that binary.
	PID int    `json:"pid,omitempty"`
	Exe string `json:"exe,omitempty"`
	// Report is the last update stage, which the heartbeat carries (also
	// across the restart into the new version and a rollback).
	Report *heartbeat.Update `json:"report,omitempty"`
}

// Trial is a version installed and on trial.
type Trial struct {
	Version  string `json:"version"`
	From     string `json:"from"`               // the version that installed it (the report's from)
	Previous string `json:"previous,omitempty"` // where a rollback goes; "" the package's binary
	Rollout  string `json:"rollout,omitempty"`
	// Deadline is how long the version has to commit, counted from its
	// first start in this boot (update.deadline, written at install).
	Deadline Duration `json:"deadline"`
	// Starts counts the launcher's starts of the version (MaxStarts).
	Starts int `json:"starts"`
	// Boot and Since are the boot id and the time since boot of the first
	// start in that boot: the deadline runs on the monotonic boot clock,
	// since a Pi's wall clock jumps when NTP first sets it.
	Boot  string   `json:"boot,omitempty"`
	Since Duration `json:"since,omitempty"`
}

// Duration is a time.Duration written as a string ("2m0s") in JSON.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// HasFailed reports whether version rolled back on this device before.
func (s *State) HasFailed(version string) bool { return slices.Contains(s.Failed, version) }

// fail marks version failed, once.
func (s *State) fail(version string) {
	if !s.HasFailed(version) {
		s.Failed = append(s.Failed, version)
	}
}

// report sets the stage the heartbeat carries.
func (s *State) report(u heartbeat.Update, now time.Time) {
	u.At = now.Unix()
	s.Report = &u
}

// rollback ends the trial: its version is failed, the previous one is in
// force again, and the reason is reported.
func (s *State) rollback(why string, now time.Time) {
	t := s.Trial
	if t == nil {
		return
	}
	s.fail(t.Version)
	s.Committed, s.Trial = t.Previous, nil
	s.report(heartbeat.Update{State: heartbeat.UpdateRolledBack, Version: t.Version, From: t.From,
		Rollout: t.Rollout, Error: why}, now)
}

// BinaryPath is where version's binary is staged under dir.
func BinaryPath(dir, version string) string {
	return filepath.Join(dir, versionsDir, version, BinaryName)
}

// ManifestPath is where version's signed manifest is staged under dir.
func ManifestPath(dir, version string) string {
	return filepath.Join(dir, versionsDir, version, ManifestName)
}

// LoadState reads dir's state.json without locking it (for display): a
// missing file is the empty state.
func LoadState(dir string) (*State, error) {
	s := &State{V: StateVersion}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read update state: %w", err)
	}
	var v struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	if v.V < 1 || v.V > StateVersion {
		return nil, fmt.Errorf("%s: %w: v %d (this version knows 1..%d)", filepath.Join(dir, StateFile), ErrStateVersion, v.V, StateVersion)
	}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	s.V = StateVersion
	return s, nil
}

func saveState(dir string, s *State) error {
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, StateFile), append(b, '\n'), 0o640)
}

// Modify runs fn on dir's state under an exclusive lock (the launcher, the
// guard and the agent all change it) and saves it when fn returns nil and
// changed something. dir is created when missing.
func Modify(dir string, fn func(*State) error) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("update dir: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("update state lock: %w", err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("update state lock: %w", err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN) //nolint:errcheck // Close releases it too
	s, err := LoadState(dir)
	if err != nil {
		return err
	}
	before, _ := json.Marshal(s)
	if err := fn(s); err != nil {
		return err
	}
	after, _ := json.Marshal(s)
	if string(before) == string(after) {
		return nil
	}
	return saveState(dir, s)
}

// sawOffer records a signed offer of group issued at t, when it is the
// newest seen.
func (s *State) sawOffer(group string, t time.Time) {
	if !t.After(s.NewestOffer[group]) {
		return
	}
	if s.NewestOffer == nil {
		s.NewestOffer = map[string]time.Time{}
	}
	s.NewestOffer[group] = t
}
