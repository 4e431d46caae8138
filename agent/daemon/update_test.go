package daemon_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/agent/update"
	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// updateRig is a fleetRig with a release key and an HTTPS server holding
// a release binary.
type updateRig struct {
	*fleetRig
	rel *sign.Signer
	bin []byte
	srv *httptest.Server
	ca  string
}

func newUpdateRig(t *testing.T) *updateRig {
	t.Helper()
	r := &updateRig{fleetRig: newFleetRig(t), bin: bytes.Repeat([]byte("edge-agent v1.1.0\n"), 20000)}
	var err error
	if r.rel, err = sign.Generate(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "release-keys.pem"), r.rel.PublicPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.ServeContent(w, req, "bin", time.Time{}, bytes.NewReader(r.bin))
	}))
	t.Cleanup(r.srv.Close)
	r.ca = filepath.Join(r.dir, "ca.pem")
	if err := os.WriteFile(r.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *updateRig) updateConfig(extra string) *config.Config {
	return r.config(fmt.Sprintf("update: {keys_file: %s, ca_file: %s, deadline: 10s}\n%s",
		filepath.Join(r.dir, "release-keys.pem"), r.ca, extra))
}

// publishOffer publishes, retained, a signed offer of version for this
// machine's arch, as `cloud-forwarder fleet update publish` does (or, with
// state aborted, `fleet update abort`).
func (r *updateRig) publishOffer(version string, state ...string) {
	r.t.Helper()
	h := sha256.Sum256(r.bin)
	m, err := release.SignManifest(release.Manifest{Version: version, Arch: release.RunningArch(), Size: int64(len(r.bin)),
		SHA256: hex.EncodeToString(h[:]), URL: r.srv.URL + "/edge-agent_" + version}, r.rel)
	if err != nil {
		r.t.Fatal(err)
	}
	o := release.Offer{Rollout: "r-" + version, Group: "g1", Version: version, Percent: 100,
		State: release.StateActive, Issued: time.Now(), Manifests: []json.RawMessage{m}}
	if len(state) > 0 {
		o.State = state[0]
	}
	p, err := release.SignOffer(o, r.key)
	if err != nil {
		r.t.Fatal(err)
	}
	r.publish("publish offer", release.OfferTopic("sensors", "g1"), true, p)
}

// waitUpdate waits for a heartbeat whose update stage is state.
func (r *updateRig) waitUpdate(state string) heartbeat.Update {
	r.t.Helper()
	var u heartbeat.Update
	testkit.WaitFor(r.t, "heartbeat update "+state, 30*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		var hb heartbeat.Heartbeat
		if json.Unmarshal(r.status, &hb) != nil || hb.Update == nil {
			return false
		}
		u = *hb.Update
		return u.State == state
	})
	return u
}

// TestUpdateInstallsAndRestarts: a downgrade is refused and reported; an
// offer of a newer version is downloaded over HTTPS, verified, staged and
// made the trial, and the agent stops by itself (exit 0 under systemd,
// which starts the launcher), reporting "installed" in its last
// heartbeat; no reading is lost or duplicated.
func TestUpdateInstallsAndRestarts(t *testing.T) {
	r := newUpdateRig(t)
	cfg := r.updateConfig("")
	run, _ := startAgent(t, cfg, daemon.Options{Version: "1.0.0"})
	testkit.WaitFor(t, "readings", 10*time.Second, func() bool { n, _ := r.since(time.Time{}); return n >= 5 })

	r.publishOffer("0.9.0")
	if u := r.waitUpdate(heartbeat.UpdateRefused); u.Version != "0.9.0" || u.From != "1.0.0" {
		t.Fatalf("downgrade report %+v", u)
	}
	r.publishOffer("1.1.0")
	select {
	case err := <-run.done:
		close(run.done)
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop to restart into the new version")
	}
	if u := r.waitUpdate(heartbeat.UpdateInstalled); u.Version != "1.1.0" || u.Rollout != "r-1.1.0" {
		t.Fatalf("install report %+v", u)
	}
	s, err := update.LoadState(cfg.UpdateDir())
	if err != nil {
		t.Fatal(err)
	}
	if s.Trial == nil || s.Trial.Version != "1.1.0" || s.Trial.Previous != "" || s.Trial.Deadline != update.Duration(10*time.Second) {
		t.Fatalf("state %+v", s)
	}
	if got, err := os.ReadFile(update.BinaryPath(cfg.UpdateDir(), "1.1.0")); err != nil || !bytes.Equal(got, r.bin) {
		t.Fatalf("staged binary: %v", err)
	}
	r.checkNoLossNoDup(cfg.Buffer.Path)
}

// TestUpdateAbortedDuringDownload: the operator aborts the rollout while
// the agent downloads its binary: the download stops, nothing is
// installed, the agent keeps running and reports the refusal.
func TestUpdateAbortedDuringDownload(t *testing.T) {
	r := newUpdateRig(t)
	started, gone := make(chan struct{}, 1), make(chan struct{}, 1)
	r.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(r.bin)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(r.bin[:1000])
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-req.Context().Done() // the rest never comes: only the abort can end it
		gone <- struct{}{}
	})
	cfg := r.updateConfig("")
	run, _ := startAgent(t, cfg, daemon.Options{Version: "1.0.0"})
	r.publishOffer("1.1.0")
	<-started
	r.publishOffer("1.1.0", release.StateAborted)
	u := r.waitUpdate(heartbeat.UpdateRefused)
	if u.Version != "1.1.0" || u.Rollout != "r-1.1.0" || !strings.Contains(u.Error, release.ErrAborted.Error()) {
		t.Fatalf("report %+v, want refused: rollout aborted", u)
	}
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the download went on after the abort")
	}
	select {
	case err := <-run.done:
		close(run.done)
		t.Fatalf("the agent stopped (%v) after an aborted offer", err)
	default:
	}
	s, err := update.LoadState(cfg.UpdateDir())
	if err != nil {
		t.Fatal(err)
	}
	if s.Trial != nil {
		t.Fatalf("installed: %+v", s.Trial)
	}
}

// TestUpdateTrialCommits: the new version, exec'd by the launcher,
// reports "trial", and commits once connected with a reading stored.
func TestUpdateTrialCommits(t *testing.T) {
	r := newUpdateRig(t)
	cfg := r.updateConfig("")
	trialState(t, cfg.UpdateDir())
	o := daemon.Options{Version: "1.1.0"}
	daemon.WithLaunched(&o)
	startAgent(t, cfg, o)
	u := r.waitUpdate(heartbeat.UpdateCommitted)
	if u.Version != "1.1.0" || u.From != "1.0.0" {
		t.Fatalf("commit report %+v", u)
	}
	s, err := update.LoadState(cfg.UpdateDir())
	if err != nil {
		t.Fatal(err)
	}
	if s.Committed != "1.1.0" || s.Trial != nil {
		t.Fatalf("state %+v", s)
	}
}

// TestUpdateTrialWithoutConfirmationRollsBack: with delivery kafka, a
// version that never receives a confirmation is not healthy: past the
// deadline it rolls back and stops, the failure reported.
func TestUpdateTrialWithoutConfirmationRollsBack(t *testing.T) {
	r := newUpdateRig(t)
	cfg := r.updateConfig("")
	cfg.MQTT.Delivery, cfg.MQTT.ConfirmUnsigned = config.DeliveryKafka, true
	trialState(t, cfg.UpdateDir())
	o := daemon.Options{Version: "1.1.0"}
	daemon.WithLaunched(&o)
	run, _ := startAgent(t, cfg, o)
	select {
	case err := <-run.done:
		close(run.done)
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the trial did not end past its deadline")
	}
	u := r.waitUpdate(heartbeat.UpdateRolledBack)
	s, err := update.LoadState(cfg.UpdateDir())
	if err != nil {
		t.Fatal(err)
	}
	if !s.HasFailed("1.1.0") || s.Trial != nil {
		t.Fatalf("state %+v, report %+v", s, u)
	}
	t.Logf("rolled back: %s", u.Error)
}

func trialState(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	st := `{"v":1,"trial":{"version":"1.1.0","from":"1.0.0","deadline":"10s","starts":1},` +
		`"report":{"state":"trial","version":"1.1.0","from":"1.0.0"}}`
	if err := os.WriteFile(filepath.Join(dir, update.StateFile), []byte(st), 0o640); err != nil {
		t.Fatal(err)
	}
}
