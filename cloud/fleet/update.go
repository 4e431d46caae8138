package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// Defaults of a new rollout: start with the canaries, and stop when one
// device in five that took the release failed with it.
const (
	DefaultPercent = 10
	DefaultAbortAt = 20
)

// ErrAborted is returned by `fleet update status` when the failures
// reached the abort threshold (it then aborted the rollout, or says it
// could not), so a script watching a rollout stops.
var ErrAborted = errors.New("rollout aborted")

func update(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cmdline.Usagef("fleet update: publish, status or abort")
	}
	switch args[0] {
	case "publish":
		return updatePublish(ctx, args[1:], getenv, stdout, stderr)
	case "status":
		return updateStatus(ctx, args[1:], getenv, stdout, stderr)
	case "abort":
		return updateAbort(ctx, args[1:], getenv, stdout, stderr)
	}
	return cmdline.Usagef("fleet update: unknown command %q (publish, status or abort)", args[0])
}

func checkGroup(g string) error {
	if g == "" {
		return cmdline.Usagef("--group NAME is required (the devices' fleet.group)")
	}
	if err := reading.CheckName(g); err != nil {
		return cmdline.Usagef("--group: %v", err)
	}
	return nil
}

// updatePublish is `fleet update publish`: sign an offer of the
// manifests with the fleet key and publish it retained on the group's
// update topic. With the same version as the active offer it keeps the
// rollout id (raising the percent), and without MANIFEST files it offers
// the active offer's manifests again.
func updatePublish(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet update publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	group := fs.String("group", "", "offer to the devices of group `NAME` (their fleet.group)")
	percent := fs.Float64("percent", -1, fmt.Sprintf("the share of the group that takes it, 0..100 (default %d for a new rollout, else the current one)", DefaultPercent))
	abortAt := fs.Float64("abort-at", -1, fmt.Sprintf("fleet update status aborts when failures reach this percent of the devices that took it; 0: never (default %d for a new rollout, else unchanged)", DefaultAbortAt))
	keysFile := fs.String("release-keys", "", "check the manifests with the release public keys `FILE` before offering them")
	keyFile := fs.String("key", "", "the operator's fleet key `FILE` (default $FLEET_KEY_FILE)")
	wait := fs.Duration("timeout", 15*time.Second, "how long to wait for the broker")
	files, err := parse(fs, args, -1, "")
	if err != nil {
		return err
	}
	if err := checkGroup(*group); err != nil {
		return err
	}
	if *percent > 100 || *abortAt > 100 {
		return cmdline.Usagef("--percent and --abort-at are 0..100")
	}
	manifests, version, err := readManifests(files, *keysFile)
	if err != nil {
		return err
	}
	e, signer, c, err := signingSession(ctx, getenv, *keyFile, *wait)
	if err != nil {
		return err
	}
	defer c.close()
	topic := release.OfferTopic(e.Prefix, *group)
	prev, err := currentOffer(ctx, c, topic)
	if err != nil {
		return err
	}
	now := release.NextIssued(prev, time.Now().UTC())
	o := release.Offer{Group: *group, Version: version, Manifests: manifests, State: release.StateActive, Issued: now}
	if len(files) == 0 {
		if prev == nil {
			return cmdline.Usagef("fleet update publish: no offer on %s yet; give the MANIFEST files (dist/release/VERSION/*.manifest.json)", topic)
		}
		o.Version, o.Manifests = prev.Version, prev.Manifests
	}
	if c, err := sameVersion(prev, o.Version); err == nil && c && prev.State == release.StateActive {
		o.Rollout, o.Percent, o.AbortPercent = prev.Rollout, prev.Percent, prev.AbortPercent
	} else {
		o.Rollout = o.Version + "-" + now.Format("20060102T150405Z")
		o.Percent, o.AbortPercent = DefaultPercent, DefaultAbortAt
	}
	if *percent >= 0 {
		o.Percent = *percent
	}
	if *abortAt >= 0 {
		o.AbortPercent = *abortAt
	}
	payload, err := release.SignOffer(o, signer)
	if err != nil {
		return cmdline.Usagef("%v", err)
	}
	if err := c.publish(ctx, topic, true, payload); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "published rollout %s of %s to group %s at %v %% (abort at %v %% failures) on %s (retained)\n",
		o.Rollout, o.Version, o.Group, o.Percent, o.AbortPercent, topic)
	return nil
}

func sameVersion(prev *release.Offer, v string) (bool, error) {
	if prev == nil {
		return false, nil
	}
	c, err := release.CompareVersions(prev.Version, v)
	return c == 0, err
}

// readManifests reads signed manifest files: all of one version, one per
// arch; with keysFile, each must verify with the release keys.
func readManifests(files []string, keysFile string) ([]json.RawMessage, string, error) {
	var keys *sign.Verifier
	if keysFile != "" {
		var err error
		if keys, err = sign.LoadVerifier(keysFile); err != nil {
			return nil, "", cmdline.Usagef("--release-keys: %v", err)
		}
	}
	var out []json.RawMessage
	version := ""
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, "", cmdline.Usagef("cannot read %s: %v", f, errors.Unwrap(err))
		}
		b = bytes.TrimSpace(b)
		m, err := release.ParseManifestUnverified(b)
		if keys != nil && err == nil {
			m, err = release.OpenManifest(b, keys)
		}
		if err != nil {
			return nil, "", cmdline.Usagef("%s: %v", f, err)
		}
		if version != "" && m.Version != version {
			return nil, "", cmdline.Usagef("%s is of version %s, the others of %s: one release per offer", f, m.Version, version)
		}
		version = m.Version
		out = append(out, b)
	}
	return out, version, nil
}

// currentOffer is the group's retained offer, decoded without verifying
// (the tool signs what it publishes again); nil when there is none.
func currentOffer(ctx context.Context, c *client, topic string) (*release.Offer, error) {
	got, err := c.retained(ctx, []string{topic}, time.Second)
	if err != nil {
		return nil, err
	}
	p, ok := got[topic]
	if !ok || len(p) == 0 {
		return nil, nil
	}
	o, err := release.ParseOfferUnverified(p)
	if err != nil {
		return nil, fmt.Errorf("the offer on %s does not decode: %w", topic, err)
	}
	return &o, nil
}

// updateAbort is `fleet update abort`: the group's offer again, state
// aborted. Devices that have not taken it yet never will; those on trial
// or committed keep what they have (a rollback is a new, higher release).
func updateAbort(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet update abort", flag.ContinueOnError)
	fs.SetOutput(stderr)
	group := fs.String("group", "", "the group `NAME` whose rollout stops")
	keyFile := fs.String("key", "", "the operator's fleet key `FILE` (default $FLEET_KEY_FILE)")
	wait := fs.Duration("timeout", 15*time.Second, "how long to wait for the broker")
	if _, err := parse(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	if err := checkGroup(*group); err != nil {
		return err
	}
	e, signer, c, err := signingSession(ctx, getenv, *keyFile, *wait)
	if err != nil {
		return err
	}
	defer c.close()
	o, err := abortOffer(ctx, c, signer, release.OfferTopic(e.Prefix, *group))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "aborted rollout %s of %s to group %s\n", o.Rollout, o.Version, o.Group)
	return nil
}

func abortOffer(ctx context.Context, c *client, signer *sign.Signer, topic string) (*release.Offer, error) {
	o, err := currentOffer(ctx, c, topic)
	if err != nil {
		return nil, err
	}
	if o == nil {
		return nil, cmdline.Usagef("no offer on %s: nothing to abort", topic)
	}
	o.State, o.Issued = release.StateAborted, release.NextIssued(o, time.Now().UTC())
	payload, err := release.SignOffer(*o, signer)
	if err != nil {
		return nil, err
	}
	return o, c.publish(ctx, topic, true, payload)
}

// RolloutDevice is one device of `fleet update status`: one that reports
// on the rollout in its heartbeat.
type RolloutDevice struct {
	ID        string `json:"device"`
	Reporting bool   `json:"reporting"`
	Agent     string `json:"agent,omitempty"` // the version it runs
	// InRollout: its bucket is below the offer's percent.
	InRollout bool             `json:"in_rollout"`
	Update    heartbeat.Update `json:"update"`
	// Failure: rolled back, or refused for a reason of the release or its
	// file (signature, hash, size, download, disk), not of policy.
	Failure bool `json:"failure"`
}

// Rollout is `fleet update status --json`.
type Rollout struct {
	Offer   *release.Offer  `json:"offer"`
	Devices []RolloutDevice `json:"devices"`
	// Stages counts the devices by their update state.
	Stages map[string]int `json:"stages"`
	// Taken: devices that took the offer (every stage but a refusal of
	// policy); Failures among them; FailurePercent = Failures/Taken.
	Taken          int     `json:"taken"`
	Failures       int     `json:"failures"`
	FailurePercent float64 `json:"failure_percent"`
	Committed      int     `json:"committed"`
	// Aborted is true when this run found the threshold reached and
	// published the offer again as aborted.
	Aborted bool `json:"aborted_now,omitempty"`
}

// policyRefusals are refusals that say the device is not meant to take
// the release, which count neither as taken nor as failures. Having
// rolled the version back before is a failure of the release.
var policyRefusals = []error{release.ErrGroup, release.ErrReplayed, release.ErrAborted, release.ErrNotInRollout,
	release.ErrNoArch, release.ErrNotNewer, release.ErrTooOld, release.ErrNotRelease}

func policyRefusal(u heartbeat.Update) bool {
	if u.State != heartbeat.UpdateRefused {
		return false
	}
	for _, e := range policyRefusals {
		if strings.Contains(u.Error, e.Error()) {
			return true
		}
	}
	return false
}

// Summarize counts the devices' reports on offer o.
func Summarize(o *release.Offer, devs []Device) Rollout {
	r := Rollout{Offer: o, Stages: map[string]int{}, Devices: []RolloutDevice{}}
	for _, d := range devs {
		u := d.Heartbeat.Update
		if u == nil || u.Rollout != o.Rollout {
			continue
		}
		rd := RolloutDevice{ID: d.ID, Reporting: d.Reporting, Agent: d.Heartbeat.Agent, Update: *u,
			InRollout: release.InRollout(d.ID, o.Percent)}
		r.Stages[u.State]++
		if !policyRefusal(*u) {
			r.Taken++
			rd.Failure = u.State == heartbeat.UpdateRolledBack || u.State == heartbeat.UpdateRefused
		}
		if rd.Failure {
			r.Failures++
		}
		if u.State == heartbeat.UpdateCommitted {
			r.Committed++
		}
		r.Devices = append(r.Devices, rd)
	}
	if r.Taken > 0 {
		r.FailurePercent = float64(r.Failures) / float64(r.Taken) * 100
	}
	sort.Slice(r.Devices, func(i, j int) bool { return r.Devices[i].ID < r.Devices[j].ID })
	return r
}

// ShouldAbort reports whether the failures reached the offer's abort
// threshold while it is active.
func (r Rollout) ShouldAbort() bool {
	o := r.Offer
	return o.State == release.StateActive && o.AbortPercent > 0 && r.Taken > 0 && r.FailurePercent >= o.AbortPercent
}

// updateStatus is `fleet update status`: each device's stage in the
// group's rollout, from the sink's database when DATABASE_URL is set, else
// the broker's retained heartbeats (as fleet status reads them); and the
// abort when the failures reached the threshold.
func updateStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet update status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	group := fs.String("group", "", "the group `NAME` whose rollout to show")
	asJSON := fs.Bool("json", false, "print JSON")
	noAbort := fs.Bool("no-abort", false, "only report; do not abort when the failures reached the threshold")
	src := sourceFlags(fs)
	keyFile := fs.String("key", "", "the operator's fleet key `FILE` to abort with (default $FLEET_KEY_FILE)")
	if _, err := parse(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	if err := checkGroup(*group); err != nil {
		return err
	}
	e, err := loadEnv(getenv)
	if err != nil {
		return err
	}
	topic := release.OfferTopic(e.Prefix, *group)
	// One connection at a time: the operator and monitoring logins may be
	// the same, and a login is bound to one client id.
	c, err := dial(ctx, e, *src.wait)
	if err != nil {
		return err
	}
	o, err := currentOffer(ctx, c, topic)
	c.close()
	if err != nil {
		return err
	}
	if o == nil {
		return cmdline.Usagef("no offer on %s (fleet update publish makes one)", topic)
	}
	devs, err := src.devices(ctx, getenv, stderr)
	if err != nil {
		return err
	}
	r := Summarize(o, devs)
	var abortErr error
	if r.ShouldAbort() && !*noAbort {
		abortErr = fmt.Errorf("%w: %d of %d devices that took %s failed (%.1f %%, threshold %v %%)",
			ErrAborted, r.Failures, r.Taken, o.Version, r.FailurePercent, o.AbortPercent)
		_, signer, c, err := signingSession(ctx, getenv, *keyFile, *src.wait)
		if err != nil {
			abortErr = fmt.Errorf("%w; NOT aborted, cannot sign: %w", abortErr, err)
		} else {
			_, err := abortOffer(ctx, c, signer, topic)
			c.close()
			if err != nil {
				abortErr = fmt.Errorf("%w; NOT aborted: %w", abortErr, err)
			} else {
				r.Aborted, r.Offer.State = true, release.StateAborted
			}
		}
	}
	if *asJSON {
		if err := cmdline.PrintJSON(stdout, r); err != nil {
			return err
		}
	} else {
		printRollout(stdout, r)
	}
	if abortErr != nil {
		fmt.Fprintln(stderr, abortErr)
	}
	return abortErr
}

var stageOrder = []string{heartbeat.UpdateOffered, heartbeat.UpdateDownloading, heartbeat.UpdateVerified,
	heartbeat.UpdateInstalled, heartbeat.UpdateTrial, heartbeat.UpdateCommitted, heartbeat.UpdateRolledBack, heartbeat.UpdateRefused}

func printRollout(w io.Writer, r Rollout) {
	o := r.Offer
	fmt.Fprintf(w, "rollout %s of %s to group %s: %s at %v %%, abort at %v %% failures (issued %s)\n\n",
		o.Rollout, o.Version, o.Group, o.State, o.Percent, o.AbortPercent, o.Issued.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tREPORTING\tAGENT\tSTAGE\tFROM\tSINCE\tERROR")
	for _, d := range r.Devices {
		rep := "yes"
		if !d.Reporting {
			rep = "NO"
		}
		stage := d.Update.State
		if d.Failure {
			stage = strings.ToUpper(stage)
		}
		since := "-"
		if d.Update.At > 0 {
			since = time.Unix(d.Update.At, 0).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, rep, orDash(d.Agent), stage, orDash(d.Update.From), since, orDash(d.Update.Error))
	}
	_ = tw.Flush()
	var counts []string
	for _, s := range stageOrder {
		if n := r.Stages[s]; n > 0 {
			counts = append(counts, fmt.Sprintf("%s %d", s, n))
		}
	}
	fmt.Fprintf(w, "\n%d devices report on this rollout: %s\n", len(r.Devices), orDash(strings.Join(counts, ", ")))
	fmt.Fprintf(w, "taken %d, committed %d, failures %d (%.1f %%)\n", r.Taken, r.Committed, r.Failures, r.FailurePercent)
	if r.Aborted {
		fmt.Fprintf(w, "ABORTED now: failures reached %v %%; devices that have not taken %s will not\n", o.AbortPercent, o.Version)
	}
}
