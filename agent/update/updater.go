package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

// ErrRestart is returned by Updater.Run when a new version is installed,
// or a trial failed: the agent stops cleanly (buffer closed, offline
// published) and exits 0, and systemd starts the launcher again.
var ErrRestart = errors.New("restart into the launcher")

// Options configure an Updater.
type Options struct {
	Dir         string           // update.dir
	DeviceID    string           // for the rollout's bucket
	Group       string           // fleet.group: the offers' topic and check
	Version     string           // the running agent's version
	FleetKeys   release.Verifier // verify the offers (fleet.keys_file)
	ReleaseKeys release.Verifier // verify the manifests (update.keys_file)
	Deadline    time.Duration    // update.deadline
	MaxSize     int64            // update.max_size
	CAFile      string           // update.ca_file
	// Launched is true in a process the launcher exec'd (update.Launched):
	// the running version is an over-the-air one.
	Launched bool
	Logger   *slog.Logger
	// OnChange is called when the report changes, so the heartbeat goes
	// out soon.
	OnChange func()
}

// Health tells whether the running agent is healthy: connected to MQTT,
// a reading stored since, and with delivery kafka a signed confirmation
// received since. The agent implements it.
type Health interface {
	Healthy(since time.Time) error
}

// Updater is the running agent's side of over-the-air updates: it takes
// offers (release.Decide), downloads, verifies, stages and installs a new
// version, and commits the version it runs when that is on trial and
// proves healthy.
type Updater struct {
	o      Options
	log    *slog.Logger
	fetch  *fetcher
	offers chan []byte
	trial  bool // this process runs the version on trial
	start  time.Time
	arch   string

	mu      sync.Mutex
	report  *heartbeat.Update
	last    [32]byte // the last offer handled, so a redelivery is not
	pending []byte   // an offer that came during the trial, for after the commit
}

// New loads the state and tells whether this process is a version on
// trial (exec'd by the launcher as the trial's version).
func New(o Options) (*Updater, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	f, err := newFetcher(o.CAFile)
	if err != nil {
		return nil, err
	}
	s, err := LoadState(o.Dir)
	if err != nil {
		return nil, err
	}
	u := &Updater{o: o, log: o.Logger, fetch: f, offers: make(chan []byte, 1), start: time.Now(),
		arch: release.RunningArch(), report: s.Report}
	u.trial = o.Launched && s.Trial != nil && s.Trial.Version == o.Version
	return u, nil
}

// Trial reports whether the running version is on trial, not committed:
// until it is, the agent writes no buffer format its predecessor cannot
// read (docs/BUFFER.md).
func (u *Updater) Trial() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.trial
}

// Report is the update stage for the heartbeat; nil when there was none.
func (u *Updater) Report() *heartbeat.Update {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.report == nil {
		return nil
	}
	r := *u.report
	return &r
}

// Offer hands an offer's payload (from the retained offer topic) to Run;
// a newer one replaces one not yet taken. It never blocks.
func (u *Updater) Offer(payload []byte) {
	p := bytes.Clone(payload)
	for {
		select {
		case u.offers <- p:
			return
		default:
		}
		select {
		case <-u.offers:
		default:
		}
	}
}

// Run handles offers and, on trial, commits the running version once h
// says it is healthy, until ctx ends. It returns ErrRestart after an
// install, and after rolling back a trial that was not healthy within
// the deadline.
func (u *Updater) Run(ctx context.Context, h Health) error {
	var tick <-chan time.Time
	if u.Trial() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
		u.log.Info("update: on trial; committing once healthy", "version", u.o.Version, "deadline", u.o.Deadline.String())
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			done, err := u.checkTrial(h)
			if err != nil {
				return err
			}
			if done {
				tick = nil
				if p := u.pending; p != nil {
					u.pending = nil
					if err := u.handle(ctx, p); err != nil {
						return err
					}
				}
			}
		case p := <-u.offers:
			if err := u.handle(ctx, p); err != nil {
				return err
			}
		}
	}
}

// checkTrial commits the trial when healthy, and rolls it back past the
// deadline (the guard does too, should this process hang).
func (u *Updater) checkTrial(h Health) (bool, error) {
	err := h.Healthy(u.start)
	if err == nil {
		return true, u.commit()
	}
	if time.Since(u.start) <= u.o.Deadline {
		return false, nil
	}
	why := fmt.Sprintf("not healthy within the deadline (%v): %v", u.o.Deadline, err)
	u.log.Error("update: rolling back", "version", u.o.Version, "why", why)
	if err := u.modify(func(s *State) {
		if s.Trial != nil && s.Trial.Version == u.o.Version {
			s.rollback(why, time.Now())
		}
	}); err != nil {
		return false, err
	}
	return true, fmt.Errorf("%w: %s", ErrRestart, why)
}

func (u *Updater) commit() error {
	var committed bool
	err := u.modify(func(s *State) {
		t := s.Trial
		if t == nil || t.Version != u.o.Version {
			return // the guard rolled it back meanwhile: it stops us
		}
		s.Committed, s.Previous, s.Trial = t.Version, t.Previous, nil
		s.report(heartbeat.Update{State: heartbeat.UpdateCommitted, Version: t.Version, From: t.From, Rollout: t.Rollout}, time.Now())
		committed = true
		if err := prune(u.o.Dir, s.Committed, s.Previous); err != nil {
			u.log.Warn("update: removing older versions", "err", err)
		}
	})
	if err != nil {
		return err
	}
	u.mu.Lock()
	u.trial = false
	u.mu.Unlock()
	if committed {
		u.log.Info("update: committed", "version", u.o.Version)
	}
	return nil
}

// modify changes the state and takes its report as the updater's.
func (u *Updater) modify(fn func(*State)) error {
	var rep *heartbeat.Update
	err := Modify(u.o.Dir, func(s *State) error {
		fn(s)
		rep = s.Report
		return nil
	})
	if err != nil {
		return err
	}
	u.mu.Lock()
	changed := fmt.Sprint(u.report) != fmt.Sprint(rep)
	u.report = rep
	u.mu.Unlock()
	if changed && u.o.OnChange != nil {
		u.o.OnChange()
	}
	return nil
}

// setReport records a stage in state.json and the heartbeat.
func (u *Updater) setReport(r heartbeat.Update) error {
	return u.modify(func(s *State) { s.report(r, time.Now()) })
}

// silent are the reasons an offer does not apply that are not news: the
// heartbeat keeps what it said before.
var silent = []error{release.ErrNotInRollout, release.ErrAborted, release.ErrFailedBefore}

// handle takes one offer.
func (u *Updater) handle(ctx context.Context, payload []byte) error {
	if u.Trial() {
		u.log.Info("update: offer kept for after the running version's trial")
		u.pending = payload
		return nil
	}
	sum := sha256.Sum256(payload)
	if sum == u.last {
		return nil // the same retained offer again (a reconnect)
	}
	u.last = sum
	offer, err := release.OpenOffer(payload, u.o.Group, u.o.FleetKeys)
	if err != nil {
		u.log.Warn("update: offer refused", "err", err)
		return u.setReport(heartbeat.Update{State: heartbeat.UpdateRefused, Error: err.Error()})
	}
	s, err := LoadState(u.o.Dir)
	if err != nil {
		return err
	}
	dev := release.Device{ID: u.o.DeviceID, Group: u.o.Group, Arch: u.arch, Version: u.o.Version, Failed: s.Failed,
		NewestOffer: s.NewestOffer[offer.Group]}
	m, err := release.Decide(offer, dev, u.o.ReleaseKeys)
	if offer.Issued.After(dev.NewestOffer) && !isAny(err, release.ErrGroup) {
		if err := u.modify(func(s *State) { s.sawOffer(offer.Group, offer.Issued) }); err != nil {
			return err
		}
	}
	rep := heartbeat.Update{Version: offer.Version, From: u.o.Version, Rollout: offer.Rollout}
	switch {
	case err == nil:
	case errors.Is(err, release.ErrNotNewer) && sameVersion(offer.Version, u.o.Version):
		return nil // running it already
	case isAny(err, silent...):
		u.log.Info("update: offer does not apply", "version", offer.Version, "why", err)
		return nil
	default:
		u.log.Warn("update: offer refused", "version", offer.Version, "err", err)
		rep.State, rep.Error = heartbeat.UpdateRefused, err.Error()
		return u.setReport(rep)
	}
	if err := u.installWatched(ctx, offer, m, rep); err != nil {
		if ctx.Err() != nil {
			return nil // stopping: the next start takes the offer again
		}
		if errors.Is(err, ErrRestart) {
			return err
		}
		u.log.Error("update: refused", "version", m.Version, "err", err)
		rep.State, rep.Error = heartbeat.UpdateRefused, err.Error()
		return u.setReport(rep)
	}
	return nil
}

// installWatched is install while watching the offer topic: the offer
// made aborted before the trial is written stops the download (or the
// staging) and refuses the release with release.ErrAborted, so the
// operator's abort also stops the devices that had not installed yet.
// Any other offer that comes meanwhile is taken after this one, unless a
// newer one came after it.
func (u *Updater) installWatched(ctx context.Context, offer release.Offer, m release.Manifest, rep heartbeat.Update) error {
	ictx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	stop := make(chan struct{})
	next := make(chan []byte, 1)
	go func() { next <- u.watchAbort(stop, offer, abort) }()
	err := u.install(ictx, offer, m, rep)
	close(stop)
	if p := <-next; p != nil {
		select {
		case u.offers <- p:
		default: // a newer offer is queued
		}
	}
	if cause := context.Cause(ictx); err != nil && ctx.Err() == nil && errors.Is(cause, release.ErrAborted) {
		_ = os.Remove(partPath(u.o.Dir, m.Version)) // the rollout is over: nothing to resume
		return cause
	}
	return err
}

// watchAbort reads the offers that come while offer is being installed,
// until stop is closed. When one is offer's rollout aborted it calls abort;
// it returns the last one, to be handled next (the aborted one is, too:
// it is the newest offer seen, which a replay is told from).
func (u *Updater) watchAbort(stop <-chan struct{}, offer release.Offer, abort context.CancelCauseFunc) []byte {
	var last []byte
	for {
		select {
		case <-stop:
			return last
		case p := <-u.offers:
			o, err := release.OpenOffer(p, u.o.Group, u.o.FleetKeys)
			if err != nil || o.Rollout != offer.Rollout || o.State != release.StateAborted {
				last = p
				continue
			}
			u.log.Warn("update: rollout aborted; stopping before the install", "version", offer.Version, "rollout", offer.Rollout)
			abort(fmt.Errorf("%w: %s stopped before it was installed", release.ErrAborted, offer.Version))
			return p
		}
	}
}

// retries is how many times a download is attempted for one offer; each
// attempt resumes where the last stopped.
const retries = 4

// install downloads, verifies and stages m, and makes it the trial.
func (u *Updater) install(ctx context.Context, offer release.Offer, m release.Manifest, rep heartbeat.Update) error {
	if u.o.MaxSize > 0 && m.Size > u.o.MaxSize {
		return fmt.Errorf("%w: %d bytes, update.max_size is %d", ErrTooLarge, m.Size, u.o.MaxSize)
	}
	signed := signedManifest(offer, m, u.o.ReleaseKeys)
	if signed == nil {
		return fmt.Errorf("%w: no signed manifest for %s", release.ErrNoArch, m.Arch)
	}
	for _, st := range []string{heartbeat.UpdateOffered, heartbeat.UpdateDownloading} {
		rep.State = st
		if err := u.setReport(rep); err != nil {
			return err
		}
	}
	u.log.Info("update: downloading", "version", m.Version, "url", m.URL, "size", m.Size)
	part := partPath(u.o.Dir, m.Version)
	var err error
	for i := range retries {
		if err = u.fetch.fetch(ctx, m.URL, m.Size, part); err == nil || !retryable(err) || ctx.Err() != nil {
			break
		}
		u.log.Warn("update: download interrupted; resuming", "attempt", i+1, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(i+1) * time.Second):
		}
	}
	if err != nil {
		return err
	}
	if err := verifyFile(part, m.Size, m.SHA256); err != nil {
		_ = os.Remove(part) // a wrong file is not resumed
		return err
	}
	rep.State = heartbeat.UpdateVerified
	if err := u.setReport(rep); err != nil {
		return err
	}
	if cause := context.Cause(ctx); errors.Is(cause, release.ErrAborted) { // during the verify
		return cause
	}
	if err := stage(u.o.Dir, m.Version, part, signed); err != nil {
		return err
	}
	previous := ""
	if u.o.Launched {
		previous = u.o.Version // an over-the-air version: staged under versions/
	}
	rep.State = heartbeat.UpdateInstalled
	err = u.modify(func(s *State) {
		s.Trial = &Trial{Version: m.Version, From: u.o.Version, Previous: previous, Rollout: offer.Rollout,
			Deadline: Duration(u.o.Deadline)}
		s.report(rep, time.Now())
	})
	if err != nil {
		return err
	}
	u.log.Info("update: installed; restarting into it", "version", m.Version, "previous", orPackage(previous))
	return fmt.Errorf("%w: %s installed", ErrRestart, m.Version)
}

// signedManifest is the offer's signed manifest for m, as received: the
// launcher verifies it again before every start.
func signedManifest(offer release.Offer, m release.Manifest, keys release.Verifier) []byte {
	for _, raw := range offer.Manifests {
		if got, err := release.OpenManifest(raw, keys); err == nil && got == m {
			return raw
		}
	}
	return nil
}

// retryable errors are worth a resume: a cut connection, a server error.
func retryable(err error) bool {
	return !isAny(err, ErrNoSpace, ErrTooLarge, ErrNotHTTPS, ErrHash, errServerShort)
}

func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

func sameVersion(a, b string) bool {
	c, err := release.CompareVersions(a, b)
	return err == nil && c == 0
}
