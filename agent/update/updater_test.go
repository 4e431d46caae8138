package update

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// updRig is an Updater of version 1.0.0 with a release key, a fleet key
// and a TLS download server serving the release binary.
type updRig struct {
	*rig
	fleet *sign.Signer
	srv   *binServer
	bin   []byte
	ca    string
}

func newUpdRig(t *testing.T, serve []byte) *updRig {
	t.Helper()
	r := newRig(t)
	fleet, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	bin := body(300_000)
	if serve == nil {
		serve = bin
	}
	srv := newBinServer(t, serve, 0)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &updRig{rig: r, fleet: fleet, srv: srv, bin: bin, ca: ca}
}

func (r *updRig) manifest(version, arch string) release.Manifest {
	return release.Manifest{Version: version, Arch: arch, Size: int64(len(r.bin)), SHA256: sum(r.bin), URL: r.srv.URL + "/bin"}
}

// offer signs an offer of ms (each signed with the release key unless
// signer is set) with the fleet key.
func (r *updRig) offer(version string, edit func(*release.Offer), ms ...release.Manifest) []byte {
	r.t.Helper()
	if len(ms) == 0 {
		ms = []release.Manifest{r.manifest(version, release.RunningArch())}
	}
	o := release.Offer{Rollout: "r-" + version, Group: "g", Version: version, Percent: 100, State: release.StateActive,
		Issued: time.Unix(1_800_000_000, 0)}
	for _, m := range ms {
		env, err := release.SignManifest(m, r.key)
		if err != nil {
			r.t.Fatal(err)
		}
		o.Manifests = append(o.Manifests, json.RawMessage(env))
	}
	if edit != nil {
		edit(&o)
	}
	p, err := release.SignOffer(o, r.fleet)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *updRig) updater(version string, launched bool) *Updater {
	r.t.Helper()
	u, err := New(Options{Dir: r.dir, DeviceID: "pi-1", Group: "g", Version: version, FleetKeys: r.fleet.Verifier(),
		ReleaseKeys: r.key.Verifier(), Deadline: 2 * time.Minute, MaxSize: 1 << 20, CAFile: r.ca, Launched: launched})
	if err != nil {
		r.t.Fatal(err)
	}
	return u
}

type healthFunc func(time.Time) error

func (f healthFunc) Healthy(since time.Time) error { return f(since) }

var neverHealthy = healthFunc(func(time.Time) error { return errors.New("no reading stored") })

func TestUpdaterInstalls(t *testing.T) {
	r := newUpdRig(t, nil)
	u := r.updater("1.0.0", false)
	err := u.handle(context.Background(), r.offer("1.1.0", nil))
	if !errors.Is(err, ErrRestart) {
		t.Fatalf("handle: %v, want ErrRestart", err)
	}
	s := r.state()
	if s.Trial == nil || s.Trial.Version != "1.1.0" || s.Trial.From != "1.0.0" || s.Trial.Previous != "" ||
		s.Trial.Deadline != Duration(2*time.Minute) || s.Report.State != heartbeat.UpdateInstalled {
		t.Fatalf("state %+v %+v", s, s.Report)
	}
	if u.Report().State != heartbeat.UpdateInstalled {
		t.Fatalf("report %+v", u.Report())
	}
	if err := verifyFile(BinaryPath(r.dir, "1.1.0"), int64(len(r.bin)), sum(r.bin)); err != nil {
		t.Fatal(err)
	}
	// What the launcher will check before it runs it.
	l := r.launcher("1.0.0")
	l.defaults()
	f, err := l.verifyStaged("1.1.0")
	if err != nil {
		t.Fatalf("the staged version does not verify: %v", err)
	}
	f.Close()
	if parts, _ := filepath.Glob(filepath.Join(r.dir, downloadDir, "*")); len(parts) != 0 {
		t.Errorf("downloads left: %v", parts)
	}
}

func TestUpdaterRefuses(t *testing.T) {
	other, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	otherArch := release.ArchARMv6
	if release.RunningArch() == otherArch {
		otherArch = release.ArchAMD64
	}
	for _, tc := range []struct {
		name    string
		serve   func(r *updRig) []byte
		offer   func(r *updRig) []byte
		free    int64
		state   func(s *State)
		want    string // the report's state; "" nothing reported
		wantErr string // in the report's error
	}{
		{name: "offer signed by another key", offer: func(r *updRig) []byte {
			p, _ := release.SignOffer(release.Offer{Rollout: "x", Group: "g", Version: "1.1.0", Percent: 100, State: release.StateActive,
				Issued: time.Now(), Manifests: []json.RawMessage{mustSign(t, r.manifest("1.1.0", release.RunningArch()), r.key)}}, other)
			return p
		}, want: heartbeat.UpdateRefused, wantErr: "signature"},
		{name: "manifest signed by another key", offer: func(r *updRig) []byte {
			return r.offer("1.1.0", func(o *release.Offer) {
				o.Manifests = []json.RawMessage{mustSign(t, r.manifest("1.1.0", release.RunningArch()), other)}
			})
		}, want: heartbeat.UpdateRefused, wantErr: "signature"},
		{name: "manifest signed by the fleet key", offer: func(r *updRig) []byte {
			return r.offer("1.1.0", func(o *release.Offer) {
				o.Manifests = []json.RawMessage{mustSign(t, r.manifest("1.1.0", release.RunningArch()), r.fleet)}
			})
		}, want: heartbeat.UpdateRefused, wantErr: "signature"},
		{name: "wrong hash", serve: func(r *updRig) []byte { b := append([]byte(nil), r.bin...); b[7] ^= 1; return b },
			want: heartbeat.UpdateRefused, wantErr: "sha256"},
		{name: "truncated download", serve: func(r *updRig) []byte { return r.bin[:1000] },
			want: heartbeat.UpdateRefused, wantErr: "truncated"},
		{name: "server sends more", serve: func(r *updRig) []byte { return append(append([]byte(nil), r.bin...), 'x') },
			want: heartbeat.UpdateRefused, wantErr: "larger"},
		{name: "over update.max_size", offer: func(r *updRig) []byte {
			m := r.manifest("1.1.0", release.RunningArch())
			m.Size = 2 << 20
			return r.offer("1.1.0", nil, m)
		}, want: heartbeat.UpdateRefused, wantErr: "max_size"},
		{name: "disk too full", free: 2*300_000 - 1, want: heartbeat.UpdateRefused, wantErr: "free space"},
		{name: "downgrade", offer: func(r *updRig) []byte { return r.offer("0.9.0", nil) },
			want: heartbeat.UpdateRefused, wantErr: "not newer"},
		{name: "same version", offer: func(r *updRig) []byte { return r.offer("1.0.0", nil) }},
		{name: "other arch", offer: func(r *updRig) []byte { return r.offer("1.1.0", nil, r.manifest("1.1.0", otherArch)) },
			want: heartbeat.UpdateRefused, wantErr: "architecture"},
		{name: "running version too old", offer: func(r *updRig) []byte {
			m := r.manifest("2.0.0", release.RunningArch())
			m.MinVersion = "1.5.0"
			return r.offer("2.0.0", nil, m)
		}, want: heartbeat.UpdateRefused, wantErr: "min_version"},
		{name: "aborted", offer: func(r *updRig) []byte {
			return r.offer("1.1.0", func(o *release.Offer) { o.State = release.StateAborted })
		}},
		{name: "not in the rollout", offer: func(r *updRig) []byte {
			return r.offer("1.1.0", func(o *release.Offer) { o.Percent = release.Bucket("pi-1") })
		}},
		{name: "rolled back here before", state: func(s *State) { s.Failed = []string{"1.1.0"} }},
		{name: "replayed offer", state: func(s *State) { s.sawOffer("g", time.Unix(1_800_000_060, 0)) },
			want: heartbeat.UpdateRefused, wantErr: "replay"},
		{name: "another group's offer", offer: func(r *updRig) []byte {
			return r.offer("1.1.0", func(o *release.Offer) { o.Group = "h" })
		}, want: heartbeat.UpdateRefused, wantErr: "group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var serve []byte
			r0 := newUpdRig(t, nil)
			if tc.serve != nil {
				serve = tc.serve(r0)
			}
			r := newUpdRig(t, serve)
			r.bin = r0.bin
			if tc.state != nil {
				r.set(tc.state)
			}
			u := r.updater("1.0.0", false)
			if tc.free > 0 {
				u.fetch.free = func(string) (int64, error) { return tc.free, nil }
			}
			p := r.offer("1.1.0", nil)
			if tc.offer != nil {
				p = tc.offer(r)
			}
			if err := u.handle(context.Background(), p); err != nil {
				t.Fatalf("handle: %v", err)
			}
			s := r.state()
			if s.Trial != nil {
				t.Fatalf("installed: %+v", s.Trial)
			}
			if ents, _ := os.ReadDir(filepath.Join(r.dir, versionsDir)); len(ents) != 0 {
				t.Fatalf("staged: %v", ents)
			}
			got := u.Report()
			if tc.want == "" {
				if got != nil {
					t.Fatalf("reported %+v for an offer that does not apply", got)
				}
				return
			}
			if got == nil || got.State != tc.want || !strings.Contains(got.Error, tc.wantErr) {
				t.Fatalf("report %+v, want %s with %q", got, tc.want, tc.wantErr)
			}
			if s.Report == nil || *s.Report != *got {
				t.Fatalf("state.json's report %+v differs from %+v", s.Report, got)
			}
		})
	}
}

func mustSign(t *testing.T, m release.Manifest, s release.Signer) json.RawMessage {
	t.Helper()
	env, err := release.SignManifest(m, s)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestUpdaterRedeliveredOfferIsHandledOnce(t *testing.T) {
	r := newUpdRig(t, nil)
	u := r.updater("1.0.0", false)
	p := r.offer("0.9.0", nil) // refused: a downgrade
	if err := u.handle(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	r.set(func(s *State) { s.Report = nil })
	if err := u.handle(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if s := r.state(); s.Report != nil {
		t.Fatalf("the same offer was handled again: %+v", s.Report)
	}
}

// TestUpdaterRefusesReplayAfterAbort: whoever can publish on the offer
// topic sends the active offer of a rollout the device has seen aborted;
// the device, restarted meanwhile, does not take it, and takes the next
// offer the operator publishes.
func TestUpdaterRefusesReplayAfterAbort(t *testing.T) {
	r := newUpdRig(t, nil)
	issued := time.Unix(1_800_000_000, 0)
	active := r.offer("1.1.0", nil)
	aborted := r.offer("1.1.0", func(o *release.Offer) { o.State = release.StateAborted; o.Issued = issued.Add(time.Minute) })
	if err := r.updater("1.0.0", false).handle(context.Background(), aborted); err != nil {
		t.Fatal(err)
	}
	if got := r.state().NewestOffer["g"]; !got.Equal(issued.Add(time.Minute)) {
		t.Fatalf("newest offer %v, want the aborted one's issued time", got)
	}
	u := r.updater("1.0.0", false) // a restart: the memory is state.json's
	if err := u.handle(context.Background(), active); err != nil {
		t.Fatalf("handle: %v", err)
	}
	if s := r.state(); s.Trial != nil || s.Report == nil || s.Report.State != heartbeat.UpdateRefused ||
		!strings.Contains(s.Report.Error, release.ErrReplayed.Error()) {
		t.Fatalf("the replayed offer was not refused: trial %+v, report %+v", s.Trial, s.Report)
	}
	if parts, _ := filepath.Glob(filepath.Join(r.dir, downloadDir, "*")); len(parts) != 0 {
		t.Fatalf("downloaded for a replay: %v", parts)
	}
	next := r.offer("1.1.0", func(o *release.Offer) { o.Rollout = "r-1.1.0-again"; o.Issued = issued.Add(2 * time.Minute) })
	if err := u.handle(context.Background(), next); !errors.Is(err, ErrRestart) {
		t.Fatalf("the operator's next offer: %v, want the install", err)
	}
	if s := r.state(); s.Trial == nil || !s.NewestOffer["g"].Equal(issued.Add(2*time.Minute)) {
		t.Fatalf("state %+v", s)
	}
}

func TestUpdaterCommitsHealthyTrial(t *testing.T) {
	r := newUpdRig(t, nil)
	r.stage("1.0.5", nil)
	r.stage("1.1.0", nil)
	r.stage("1.2.0", nil)
	r.set(func(s *State) {
		s.Committed, s.Previous = "1.1.0", "1.0.5"
		s.Trial = trial("1.2.0", "1.1.0")
	})
	u := r.updater("1.2.0", true)
	if !u.Trial() {
		t.Fatal("not on trial")
	}
	changed := make(chan struct{}, 10)
	u.o.OnChange = func() { changed <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx, healthFunc(func(time.Time) error { return nil })) }()
	<-changed
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if u.Trial() {
		t.Fatal("still on trial")
	}
	s := r.state()
	if s.Committed != "1.2.0" || s.Previous != "1.1.0" || s.Trial != nil || s.Report.State != heartbeat.UpdateCommitted {
		t.Fatalf("%+v %+v", s, s.Report)
	}
	ents, _ := os.ReadDir(filepath.Join(r.dir, versionsDir))
	if len(ents) != 2 {
		t.Errorf("versions kept after the commit: %v, want 1.1.0 and 1.2.0", ents)
	}
}

func TestUpdaterRollsBackUnhealthyTrial(t *testing.T) {
	r := newUpdRig(t, nil)
	r.stage("1.1.0", nil)
	r.set(func(s *State) { s.Trial = trial("1.1.0", "") })
	u := r.updater("1.1.0", true)
	u.o.Deadline = 0 // past at the first check
	err := u.Run(context.Background(), neverHealthy)
	if !errors.Is(err, ErrRestart) {
		t.Fatalf("Run: %v, want ErrRestart", err)
	}
	s := r.state()
	if s.Trial != nil || !s.HasFailed("1.1.0") || s.Report.State != heartbeat.UpdateRolledBack || !strings.Contains(s.Report.Error, "no reading stored") {
		t.Fatalf("%+v %+v", s, s.Report)
	}
}

func TestUpdaterNotOnTrialUnlessLaunched(t *testing.T) {
	r := newUpdRig(t, nil)
	r.set(func(s *State) { s.Trial = trial("1.1.0", "") })
	if r.updater("1.1.0", false).Trial() {
		t.Error("on trial without the launcher")
	}
	if r.updater("1.0.0", true).Trial() {
		t.Error("another version on trial")
	}
}

// TestUpdaterTakesOfferAfterTrial: an offer that comes during the trial
// waits for the commit, then is taken.
func TestUpdaterTakesOfferAfterTrial(t *testing.T) {
	r := newUpdRig(t, nil)
	r.stage("1.1.0", nil)
	r.set(func(s *State) { s.Trial = trial("1.1.0", "") })
	u := r.updater("1.1.0", true)
	if err := u.handle(context.Background(), r.offer("1.2.0", nil)); err != nil {
		t.Fatal(err)
	}
	if s := r.state(); s.Trial.Version != "1.1.0" {
		t.Fatalf("took an offer on trial: %+v", s.Trial)
	}
	err := u.Run(context.Background(), healthFunc(func(time.Time) error { return nil }))
	if !errors.Is(err, ErrRestart) {
		t.Fatalf("Run: %v, want the restart into 1.2.0", err)
	}
	s := r.state()
	if s.Committed != "1.1.0" || s.Trial == nil || s.Trial.Version != "1.2.0" || s.Trial.Previous != "1.1.0" {
		t.Fatalf("%+v %+v", s, s.Trial)
	}
}

// TestUpdaterAbortDuringDownload: the offer made aborted while its binary
// downloads stops the download, installs nothing and reports the refusal;
// any other offer meanwhile (its abort threshold changed, an abort signed by
// another key) lets the install go on.
func TestUpdaterAbortDuringDownload(t *testing.T) {
	other, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		second  func(r *updRig) []byte // the offer that comes during the download
		aborted bool
	}{
		{name: "aborted", aborted: true, second: func(r *updRig) []byte {
			return r.offer("1.1.0", func(o *release.Offer) { o.State = release.StateAborted })
		}},
		{name: "threshold changed", second: func(r *updRig) []byte {
			return r.offer("1.1.0", func(o *release.Offer) { o.AbortPercent = 30; o.Issued = o.Issued.Add(time.Minute) })
		}},
		{name: "aborted by another key", second: func(r *updRig) []byte {
			o := release.Offer{Rollout: "r-1.1.0", Group: "g", Version: "1.1.0", Percent: 100, State: release.StateAborted,
				Issued: time.Unix(1_800_000_060, 0), Manifests: []json.RawMessage{mustSign(t, r.manifest("1.1.0", release.RunningArch()), r.key)}}
			p, err := release.SignOffer(o, other)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newUpdRig(t, nil)
			started := make(chan struct{}, 1)
			gone := make(chan struct{}, 1) // the device hung up mid-body
			finish := make(chan struct{})
			r.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(r.bin)))
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(r.bin[:1000])
				w.(http.Flusher).Flush()
				started <- struct{}{}
				select {
				case <-req.Context().Done():
					gone <- struct{}{}
				case <-finish:
					_, _ = w.Write(r.bin[1000:])
				}
			})
			t.Cleanup(func() { close(finish) })
			u := r.updater("1.0.0", false)
			changed := make(chan struct{}, 100)
			u.o.OnChange = func() { changed <- struct{}{} }
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- u.Run(ctx, neverHealthy) }()
			u.Offer(r.offer("1.1.0", nil))
			<-started
			u.Offer(tc.second(r))
			if !tc.aborted {
				testkit.WaitFor(t, "the offer read during the download", 10*time.Second, func() bool { return len(u.offers) == 0 })
				finish <- struct{}{}
				if err := <-done; !errors.Is(err, ErrRestart) {
					t.Fatalf("Run: %v, want the restart into 1.1.0", err)
				}
				if s := r.state(); s.Trial == nil || s.Trial.Version != "1.1.0" {
					t.Fatalf("not installed: %+v", s)
				}
				return
			}
			select {
			case <-gone:
			case err := <-done:
				t.Fatalf("Run ended with %v, the download still on", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the download went on after the abort")
			}
			for u.Report() == nil || u.Report().State != heartbeat.UpdateRefused {
				select {
				case <-changed:
				case <-time.After(10 * time.Second):
					t.Fatalf("report %+v, want refused", u.Report())
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			rep := u.Report()
			if !strings.Contains(rep.Error, release.ErrAborted.Error()) || rep.Rollout != "r-1.1.0" || rep.Version != "1.1.0" {
				t.Fatalf("report %+v, want refused: rollout aborted", rep)
			}
			s := r.state()
			if s.Trial != nil || s.Report == nil || *s.Report != *rep {
				t.Fatalf("state %+v, report %+v", s, s.Report)
			}
			if ents, _ := os.ReadDir(filepath.Join(r.dir, versionsDir)); len(ents) != 0 {
				t.Fatalf("staged: %v", ents)
			}
			if parts, _ := filepath.Glob(filepath.Join(r.dir, downloadDir, "*")); len(parts) != 0 {
				t.Errorf("download left: %v", parts)
			}
			// The watcher ends with the install, before Run goes on.
			buf := make([]byte, 1<<20)
			if g := string(buf[:runtime.Stack(buf, true)]); strings.Contains(g, "watchAbort") {
				t.Errorf("the offer watcher outlived the install:\n%s", g)
			}
		})
	}
}
