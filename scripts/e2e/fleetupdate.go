package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/cloud/fleet"
)

// The fleet run's over-the-air phase (-fleet-update): every simulated
// device takes offers as the agent does (release.OpenOffer, release.Decide
// with pinned fleet and release keys) and runs a simulated installer
// (download, verify, install, trial, commit: no real binary swap), each
// stage reported at once in its heartbeat's update field. The operator
// uses the real `cloud-forwarder fleet update`:
//
//  1. release 1.6.0 published to 10 % of the group, then, once the
//     canaries committed, to 100 %: timed from the first publish until
//     every device committed (and `fleet update status` says so);
//  2. release 1.7.0, which fails on 30 % of the canaries (their trial
//     rolls back), published to 10 % with the default abort threshold
//     (20 %): `fleet update status`, polled as an operator's script
//     would, aborts it; no device outside the canaries takes it.

const (
	updateGroup   = "e2e"
	updateFrom    = "1.5.0"
	updateGood    = "1.6.0"
	updateBad     = "1.7.0"
	updateFailPct = 3.0 // devices below this bucket fail 1.7.0: 30 % of a 10 % canary set
)

// fleetUpdate holds the keys and every device's installer.
type fleetUpdate struct {
	dir, fleetKeyFile      string
	fleetKeys, releaseKeys *sign.Verifier
	releaseKey             *sign.Signer
	mu                     sync.Mutex
	devices                []*simInstaller
}

func newFleetUpdate(dir string) (*fleetUpdate, error) {
	fk, err := sign.Generate()
	if err != nil {
		return nil, err
	}
	rk, err := sign.Generate()
	if err != nil {
		return nil, err
	}
	f := &fleetUpdate{dir: filepath.Join(dir, "update"), fleetKeys: fk.Verifier(), releaseKeys: rk.Verifier(), releaseKey: rk}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	f.fleetKeyFile = filepath.Join(f.dir, "fleet.key")
	return f, os.WriteFile(f.fleetKeyFile, fk.PrivatePEM(), 0o600)
}

// manifests writes the signed manifests of version (all four arches, as
// make release does) and returns their paths.
func (f *fleetUpdate) manifests(version string) ([]string, error) {
	var out []string
	for _, a := range release.Archs {
		m := release.Manifest{Version: version, Arch: a, Size: 9 << 20, SHA256: fmt.Sprintf("%064x", sha256.Sum256([]byte(version+a))),
			URL: "https://releases.e2e.invalid/" + version + "/" + release.BinaryFile(version, a)}
		b, err := release.SignManifest(m, f.releaseKey)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(f.dir, release.ManifestFile(version, a))
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// simInstaller is one simulated device's updater.
type simInstaller struct {
	id   string
	f    *fleetUpdate
	kick chan struct{} // a stage changed: publish the heartbeat now

	mu      sync.Mutex
	version string
	failed  []string
	rep     *heartbeat.Update
	busy    bool
	pending []byte // an offer that came while installing
	ctx     context.Context
}

func (f *fleetUpdate) device(ctx context.Context, id string) *simInstaller {
	in := &simInstaller{id: id, f: f, kick: make(chan struct{}, 1), version: updateFrom, ctx: ctx}
	f.mu.Lock()
	f.devices = append(f.devices, in)
	f.mu.Unlock()
	return in
}

func (in *simInstaller) subscription() mqttpub.Subscription {
	return mqttpub.Subscription{Topic: release.OfferTopic("sensors", updateGroup), Handle: in.offer}
}

// set records a stage and has the heartbeat published at once.
func (in *simInstaller) set(u heartbeat.Update) {
	u.At = time.Now().Unix()
	in.mu.Lock()
	in.rep = &u
	in.mu.Unlock()
	select {
	case in.kick <- struct{}{}:
	default:
	}
}

func (in *simInstaller) state() (version string, rep *heartbeat.Update) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.version, in.rep
}

// offer is the agent's Updater.handle, with the installer simulated.
func (in *simInstaller) offer(p []byte) {
	in.mu.Lock()
	if in.busy {
		in.pending = p
		in.mu.Unlock()
		return
	}
	dev := release.Device{ID: in.id, Group: updateGroup, Arch: release.ArchAMD64, Version: in.version, Failed: in.failed}
	in.mu.Unlock()
	o, err := release.OpenOffer(p, updateGroup, in.f.fleetKeys)
	if err != nil {
		in.set(heartbeat.Update{State: heartbeat.UpdateRefused, Error: err.Error()})
		return
	}
	m, err := release.Decide(o, dev, in.f.releaseKeys)
	rep := heartbeat.Update{Version: o.Version, From: dev.Version, Rollout: o.Rollout}
	switch {
	case err == nil:
	case errors.Is(err, release.ErrNotNewer) && o.Version == dev.Version,
		errors.Is(err, release.ErrNotInRollout), errors.Is(err, release.ErrAborted), errors.Is(err, release.ErrFailedBefore):
		return // not news, as the agent
	default:
		rep.State, rep.Error = heartbeat.UpdateRefused, err.Error()
		in.set(rep)
		return
	}
	in.mu.Lock()
	in.busy = true
	in.mu.Unlock()
	go in.install(m, rep)
}

// jitter is a stable per-device delay in [lo, hi).
func (in *simInstaller) jitter(salt string, lo, hi time.Duration) time.Duration {
	h := sha256.Sum256([]byte(salt + in.id))
	return lo + time.Duration(binary.BigEndian.Uint64(h[:8])%uint64(hi-lo))
}

func (in *simInstaller) install(m release.Manifest, rep heartbeat.Update) {
	defer func() {
		in.mu.Lock()
		in.busy = false
		p := in.pending
		in.pending = nil
		in.mu.Unlock()
		if p != nil {
			in.offer(p) // as the retained offer arrives again after the restart
		}
	}()
	steps := []struct {
		state string
		take  time.Duration
	}{
		{heartbeat.UpdateOffered, 0},
		{heartbeat.UpdateDownloading, in.jitter("download", 500*time.Millisecond, 3*time.Second)}, // 9 MiB at 3 to 18 MiB/s
		{heartbeat.UpdateVerified, 100 * time.Millisecond},
		{heartbeat.UpdateInstalled, in.jitter("restart", 200*time.Millisecond, 800*time.Millisecond)}, // clean stop, launcher, new start
		{heartbeat.UpdateTrial, in.jitter("healthy", time.Second, 3*time.Second)},                     // connected, a reading stored, a confirmation
	}
	for _, st := range steps {
		rep.State = st.state
		in.set(rep)
		if sleepCtx(in.ctx, st.take) != nil {
			return
		}
	}
	if m.Version == updateBad && release.Bucket(in.id) < updateFailPct {
		in.mu.Lock()
		in.failed = append(in.failed, m.Version)
		in.mu.Unlock()
		rep.State, rep.Error = heartbeat.UpdateRolledBack, "not healthy within the deadline (simulated)"
		in.set(rep)
		return
	}
	in.mu.Lock()
	in.version = m.Version
	in.mu.Unlock()
	rep.State = heartbeat.UpdateCommitted
	in.set(rep)
}

// updStatus is a simulated device's heartbeat with its update field and
// the version it runs, published again at once when a stage changes.
type updStatus struct {
	*simStatus
	in *simInstaller
}

func (u updStatus) Status(state string) []byte {
	b := u.simStatus.Status(state)
	v, rep := u.in.state()
	h, err := heartbeat.Decode(b)
	if err != nil {
		return b
	}
	h.Agent, h.Update = v, rep
	return heartbeat.Encode(&h)
}

func (u updStatus) Due(ctx context.Context) error {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- u.simStatus.Due(dctx) }()
	select {
	case err := <-done:
		return err
	case <-u.in.kick:
		if u.hung.Load() {
			return <-done // a hung agent says nothing
		}
		cancel()
		<-done
		return ctx.Err()
	}
}

// updateReport is what the update phase measured.
type updateReport struct {
	Devices  int `json:"devices"`
	Canaries int `json:"canaries"` // bucket below 10
	// The good release: from the first publish (10 %) until every canary
	// committed; from the publish at 100 % until every device committed,
	// and from the first publish; when `fleet update status` said so.
	PublishS           float64 `json:"publish_command_s"`
	CanariesCommittedS float64 `json:"canaries_committed_s"`
	AllCommittedAfter  float64 `json:"all_committed_after_100_s"`
	AllCommittedS      float64 `json:"all_committed_from_first_publish_s"`
	StatusConfirmsS    float64 `json:"fleet_update_status_all_committed_s"`
	// The bad release: from its publish until `fleet update status`
	// aborted it, and what the rollout looked like then.
	BadCanaries     int     `json:"bad_canaries"`
	BadFailing      int     `json:"bad_failing_canaries"`
	AbortS          float64 `json:"abort_s"`
	AbortTaken      int     `json:"abort_taken"`
	AbortFailures   int     `json:"abort_failures"`
	AbortFailurePct float64 `json:"abort_failure_percent"`
	BadTakenOutside int     `json:"bad_taken_outside_canaries"`
	BadCommitted    int     `json:"bad_committed"`
	StillOnGood     int     `json:"still_on_good"`
	Err             string  `json:"error,omitempty"`
	Pass            bool    `json:"pass"`
}

// cli runs `cloud-forwarder fleet ARGS` as the operator (and the
// monitoring login, or the sink's database, for status).
func (f *fleetUpdate) cli(ctx context.Context, s *stack, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin("cloud-forwarder"), append([]string{"fleet"}, args...)...)
	cmd.Env = append(os.Environ(), "FLEET_MQTT_URL=ssl://"+s.mqtt, "FLEET_CA_FILE="+s.certs.CAFile,
		"FLEET_USERNAME="+operatorUser, "FLEET_PASSWORD="+operatorPass, "FLEET_KEY_FILE="+f.fleetKeyFile,
		"FLEET_STATUS_USERNAME="+monitorUser, "FLEET_STATUS_PASSWORD="+monitorPass)
	if s.sink != nil {
		cmd.Env = append(cmd.Env, "DATABASE_URL="+s.sink.url)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("cloud-forwarder fleet %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// status runs `fleet update status --json`; aborted is true when it
// aborted the rollout (exit 1 with the rollout in its output).
func (f *fleetUpdate) status(ctx context.Context, s *stack, extra ...string) (r fleet.Rollout, aborted bool, err error) {
	args := append([]string{"update", "status", "--group", updateGroup, "--json", "--wait", "1s", "--stale", "1m"}, extra...)
	out, err := f.cli(ctx, s, args...)
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		if err == nil {
			err = jerr
		}
		return r, false, err
	}
	if err != nil && r.Aborted {
		return r, true, nil
	}
	return r, false, err
}

// count counts the devices whose report on version is in state (and, for
// committed, that run it).
func (f *fleetUpdate) count(version, state string, only func(id string) bool) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, in := range f.devices {
		if only != nil && !only(in.id) {
			continue
		}
		if _, rep := in.state(); rep != nil && rep.Version == version && rep.State == state {
			n++
		}
	}
	return n
}

func (f *fleetUpdate) waitCount(ctx context.Context, version, state string, only func(string) bool, want int, since time.Time, limit time.Duration) (time.Duration, error) {
	for {
		got := f.count(version, state, only)
		if got == want {
			return time.Since(since), nil
		}
		if time.Since(since) > limit {
			return time.Since(since), fmt.Errorf("%d of %d devices %s %s after %v", got, want, state, version, limit)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

func canary(id string) bool { return release.InRollout(id, fleet.DefaultPercent) }

// run is the phase; n is the number of devices.
func (f *fleetUpdate) run(ctx context.Context, s *stack, n int) updateReport {
	r := updateReport{Devices: n}
	fail := func(err error) updateReport {
		r.Err = err.Error()
		s.log.Warn("fleet update", "err", err)
		return r
	}
	for _, in := range f.devices {
		if canary(in.id) {
			r.Canaries++
			if release.Bucket(in.id) < updateFailPct {
				r.BadFailing++
			}
		}
	}
	r.BadCanaries = r.Canaries
	good, err := f.manifests(updateGood)
	if err != nil {
		return fail(err)
	}
	at := time.Now()
	if _, err := f.cli(ctx, s, append([]string{"update", "publish", "--group", updateGroup}, good...)...); err != nil {
		return fail(err)
	}
	r.PublishS = time.Since(at).Seconds()
	s.log.Info("fleet update: release published to 10 %", "version", updateGood, "canaries", r.Canaries)
	took, err := f.waitCount(ctx, updateGood, heartbeat.UpdateCommitted, canary, r.Canaries, at, 60*time.Second)
	if err != nil {
		return fail(err)
	}
	r.CanariesCommittedS = took.Seconds()
	at100 := time.Now()
	if _, err := f.cli(ctx, s, "update", "publish", "--group", updateGroup, "--percent", "100"); err != nil {
		return fail(err)
	}
	took, err = f.waitCount(ctx, updateGood, heartbeat.UpdateCommitted, nil, n, at100, 120*time.Second)
	if err != nil {
		return fail(err)
	}
	r.AllCommittedAfter, r.AllCommittedS = took.Seconds(), time.Since(at).Seconds()
	for {
		st, _, err := f.status(ctx, s, "--no-abort")
		if err == nil && st.Committed == n {
			r.StatusConfirmsS = time.Since(at).Seconds()
			break
		}
		if time.Since(at100) > 120*time.Second {
			return fail(fmt.Errorf("fleet update status: %d of %d committed (%v)", st.Committed, n, err))
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return fail(err)
		}
	}
	s.log.Info("fleet update: every device committed", "version", updateGood, "after", time.Since(at).Round(time.Millisecond))

	// The bad release: the operator's script polls status until it aborts.
	bad, err := f.manifests(updateBad)
	if err != nil {
		return fail(err)
	}
	atBad := time.Now()
	if _, err := f.cli(ctx, s, append([]string{"update", "publish", "--group", updateGroup}, bad...)...); err != nil {
		return fail(err)
	}
	for {
		st, aborted, err := f.status(ctx, s)
		if err != nil {
			s.log.Warn("fleet update status", "err", err)
		}
		if aborted {
			r.AbortS = time.Since(atBad).Seconds()
			r.AbortTaken, r.AbortFailures, r.AbortFailurePct = st.Taken, st.Failures, st.FailurePercent
			break
		}
		if time.Since(atBad) > 120*time.Second {
			return fail(fmt.Errorf("the bad release was not aborted within 120s (taken %d, failures %d)", st.Taken, st.Failures))
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return fail(err)
		}
	}
	s.log.Info("fleet update: the bad release aborted", "after", time.Since(atBad).Round(time.Millisecond))
	// Let every in-flight canary finish, then count.
	if err := sleepCtx(ctx, 5*time.Second); err != nil {
		return fail(err)
	}
	f.mu.Lock()
	for _, in := range f.devices {
		v, rep := in.state()
		if rep != nil && rep.Version == updateBad && !canary(in.id) {
			r.BadTakenOutside++
		}
		switch v {
		case updateBad:
			r.BadCommitted++
		case updateGood:
			r.StillOnGood++
		}
	}
	f.mu.Unlock()
	r.Pass = r.Err == "" && r.StatusConfirmsS > 0 && r.AbortS > 0 && r.BadTakenOutside == 0 &&
		r.StillOnGood+r.BadCommitted == n && r.AbortFailurePct >= fleet.DefaultAbortAt
	return r
}

func (r *updateReport) text(w io.Writer) {
	fmt.Fprintf(w, "fleet update  release %s to %d devices (%d canaries at 10 %%): publish took %.2fs; canaries committed %.1fs after it; "+
		"at 100 %% every device committed %.1fs after that (%.1fs from the first publish), `fleet update status` showed all committed at %.1fs\n",
		updateGood, r.Devices, r.Canaries, r.PublishS, r.CanariesCommittedS, r.AllCommittedAfter, r.AllCommittedS, r.StatusConfirmsS)
	fmt.Fprintf(w, "fleet abort   release %s failing on %d of %d canaries: `fleet update status` aborted it %.1fs after the publish "+
		"(%d taken, %d failures = %.1f %% >= %d %%); devices outside the canaries that took it: %d; on %s: %d, on %s: %d%s\n",
		updateBad, r.BadFailing, r.BadCanaries, r.AbortS, r.AbortTaken, r.AbortFailures, r.AbortFailurePct, fleet.DefaultAbortAt,
		r.BadTakenOutside, updateGood, r.StillOnGood, updateBad, r.BadCommitted, map[bool]string{true: "; " + r.Err, false: ""}[r.Err != ""])
}
