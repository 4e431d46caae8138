package release_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/buffer/sign/envelope"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestVersions(t *testing.T) {
	valid := []string{"1.6.0", "v1.6.0", "0.0.1", "1.6.0-rc.1", "v2.0.0+build.7", "10.20.30"}
	invalid := []string{"", "dev", "4b8e905", "1.6", "v1", "1.6.0.1", "01.6.0", "1.6.x", "vv1.6.0", "1.6.0-"}
	for _, v := range valid {
		if err := release.ValidVersion(v); err != nil {
			t.Errorf("ValidVersion(%q) = %v", v, err)
		}
	}
	for _, v := range invalid {
		if err := release.ValidVersion(v); !errors.Is(err, release.ErrNotRelease) {
			t.Errorf("ValidVersion(%q) = %v, want ErrNotRelease", v, err)
		}
	}
	cmp := []struct {
		a, b string
		want int
	}{
		{"1.6.0", "1.5.9", 1},
		{"1.5.0", "1.6.0", -1},
		{"1.6.0", "v1.6.0", 0},
		{"1.10.0", "1.9.0", 1},
		{"1.6.0-rc.1", "1.6.0", -1},
		{"1.6.0-rc.2", "1.6.0-rc.10", -1},
		{"1.6.0+a", "1.6.0+b", 0},
		{"2.0.0", "1.99.99", 1},
	}
	for _, c := range cmp {
		got, err := release.CompareVersions(c.a, c.b)
		if err != nil || got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d", c.a, c.b, got, err, c.want)
		}
	}
	if _, err := release.CompareVersions("1.6.0", "dev"); !errors.Is(err, release.ErrNotRelease) {
		t.Errorf("CompareVersions with dev: %v", err)
	}
}

func TestArch(t *testing.T) {
	tests := []struct{ goarch, goarm, want string }{
		{"amd64", "", "amd64"},
		{"arm64", "", "arm64"},
		{"arm", "6", "armv6"},
		{"arm", "7", "armv7"},
		{"arm", "7,hardfloat", "armv7"},
		{"arm", "", "armv6"},
		{"arm", "5", "armv5"},
		{"riscv64", "", "riscv64"},
	}
	for _, tt := range tests {
		if got := release.ArchOf(tt.goarch, tt.goarm); got != tt.want {
			t.Errorf("archOf(%q, %q) = %q, want %q", tt.goarch, tt.goarm, got, tt.want)
		}
	}
	if a := release.RunningArch(); a == "" {
		t.Error("RunningArch is empty")
	}
}

func TestBucket(t *testing.T) {
	// Pinned: the agent and the operator's tool must agree forever.
	pinned := map[string]float64{"pi-1": 16.67326965660836, "pi-greenhouse-7": 41.71466060135487, "": 30.055933648030177}
	for id, want := range pinned {
		if got := release.Bucket(id); got != want {
			t.Errorf("Bucket(%q) = %v, want %v", id, got, want)
		}
	}
	n, in := 20000, 0
	for i := range n {
		b := release.Bucket(fmt.Sprintf("dev-%05d", i))
		if b < 0 || b >= 100 {
			t.Fatalf("Bucket out of range: %v", b)
		}
		if release.InRollout(fmt.Sprintf("dev-%05d", i), 10) {
			in++
		}
	}
	if share := float64(in) / float64(n) * 100; math.Abs(share-10) > 1 {
		t.Errorf("%.2f %% of devices in a 10 %% rollout", share)
	}
	for i := range 100 {
		id := fmt.Sprintf("dev-%d", i)
		if release.InRollout(id, 10) && !release.InRollout(id, 50) {
			t.Errorf("%s in at 10 %% but not at 50 %%", id)
		}
		if release.InRollout(id, 0) || !release.InRollout(id, 100) {
			t.Errorf("%s: 0 %% must take none, 100 %% all", id)
		}
	}
}

func TestSignManifestValidates(t *testing.T) {
	rel, _ := loadKeys(t)
	good := manifest("1.6.0", "arm64")
	tests := []struct {
		name   string
		change func(*release.Manifest)
	}{
		{"dev version", func(m *release.Manifest) { m.Version = "dev" }},
		{"unknown arch", func(m *release.Manifest) { m.Arch = "mips" }},
		{"zero size", func(m *release.Manifest) { m.Size = 0 }},
		{"negative size", func(m *release.Manifest) { m.Size = -1 }},
		{"short hash", func(m *release.Manifest) { m.SHA256 = hash[:62] }},
		{"upper-case hash", func(m *release.Manifest) { m.SHA256 = strings.ToUpper(hash) }},
		{"http url", func(m *release.Manifest) { m.URL = "http://releases.example/x" }},
		{"relative url", func(m *release.Manifest) { m.URL = "edge-agent_1.6.0_arm64" }},
		{"bad min_version", func(m *release.Manifest) { m.MinVersion = "1.5" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good
			tt.change(&m)
			if _, err := release.SignManifest(m, rel); !errors.Is(err, release.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			// Signed anyway (by hand), the device refuses it too.
			raw, _ := json.Marshal(m)
			p, err := envelope.Seal("manifest", raw, release.ReleasePurpose, rel)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := release.OpenManifest(p, rel.Verifier()); !errors.Is(err, release.ErrMalformed) {
				t.Fatalf("open: err = %v, want ErrMalformed", err)
			}
		})
	}
}

// with returns payload with one envelope key replaced (or removed when v
// is empty).
func with(payload []byte, k, v string) []byte {
	var e map[string]json.RawMessage
	_ = json.Unmarshal(payload, &e)
	if v == "" {
		delete(e, k)
	} else {
		e[k] = json.RawMessage(v)
	}
	b, _ := json.Marshal(e)
	return b
}

func sigOf(p []byte) string {
	var e struct{ Sig string }
	_ = json.Unmarshal(p, &e)
	return `"` + e.Sig + `"`
}

func TestOpenManifestRefuses(t *testing.T) {
	rel, fleet := loadKeys(t)
	m := manifest("1.6.0", "arm64")
	good := mustSignManifest(t, m, rel)
	other := manifest("1.6.0", "armv7")
	unknownField, _ := envelope.Seal("manifest", []byte(`{"version":"1.6.0","arch":"arm64","size":4,"sha256":"`+hash+`","url":"https://r.example/x","extra":1}`), release.ReleasePurpose, rel)
	tests := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"unsigned", with(good, "sig", ""), release.ErrSignature},
		{"empty signature", with(good, "sig", `""`), release.ErrSignature},
		{"not base64", with(good, "sig", `"***"`), release.ErrSignature},
		{"fleet key", mustSignManifest(t, m, fleet), release.ErrSignature},
		{"offer purpose", mustSignManifest(t, m, purposeSigner{rel, release.OfferPurpose}), release.ErrSignature},
		{"confirmation purpose", mustSignManifest(t, m, purposeSigner{rel, "sensorpipe confirm v2"}), release.ErrSignature},
		{"fleet config purpose", mustSignManifest(t, m, purposeSigner{rel, "sensorpipe fleet config v1"}), release.ErrSignature},
		{"tampered hash", with(good, "manifest", strings.Replace(string(mustRaw(t, good)), hash, strings.Repeat("0", 64), 1)), release.ErrSignature},
		{"tampered size", with(good, "manifest", strings.Replace(string(mustRaw(t, good)), `"size":4`, `"size":5`, 1)), release.ErrSignature},
		{"re-encoded manifest", with(good, "manifest", strings.Replace(string(mustRaw(t, good)), `"version":"1.6.0","arch":"arm64"`, `"arch":"arm64","version":"1.6.0"`, 1)), release.ErrSignature},
		{"signature of another manifest", with(good, "sig", sigOf(mustSignManifest(t, other, rel))), release.ErrSignature},
		{"wire version", with(good, "v", "2"), release.ErrMalformed},
		{"not json", []byte("edge-agent"), release.ErrMalformed},
		{"no manifest", with(good, "manifest", ""), release.ErrMalformed},
		{"null manifest", with(good, "manifest", "null"), release.ErrMalformed},
		{"unknown field", unknownField, release.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := release.OpenManifest(tt.payload, rel.Verifier()); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	got, err := release.OpenManifest(good, rel.Verifier())
	if err != nil || got != m {
		t.Fatalf("good manifest: %+v, %v", got, err)
	}
	if _, err := release.OpenManifest(good, nil); !errors.Is(err, release.ErrSignature) {
		t.Fatalf("no keys: %v", err)
	}
	// A keyring with the old and the new release key (rotation) verifies.
	ring, err := sign.ParseVerifier(append(fleet.PublicPEM(), rel.PublicPEM()...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := release.OpenManifest(good, ring); err != nil {
		t.Fatalf("keyring: %v", err)
	}
}

func mustRaw(t *testing.T, p []byte) []byte {
	t.Helper()
	raw, err := envelope.Unverified(p, "manifest")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestOffer(t *testing.T) {
	rel, fleet := loadKeys(t)
	o := offer(t, rel, "1.6.0")
	good, err := release.SignOffer(o, fleet)
	if err != nil {
		t.Fatal(err)
	}
	got, err := release.OpenOffer(good, "gh", fleet.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	if got.Rollout != o.Rollout || got.Percent != 100 || !got.Issued.Equal(o.Issued) || len(got.Manifests) != 4 {
		t.Fatalf("round trip: %+v", got)
	}
	for i := range got.Manifests {
		if !bytes.Equal(got.Manifests[i], o.Manifests[i]) {
			t.Fatalf("manifest %d changed on the way:\n%s\n%s", i, got.Manifests[i], o.Manifests[i])
		}
	}
	aborted := o
	aborted.State = release.StateAborted
	raw := func(o release.Offer) []byte { b, _ := json.Marshal(o); return b }
	sealed := func(raw []byte) []byte {
		p, err := envelope.Seal("offer", raw, release.OfferPurpose, fleet)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	badPercent := o
	badPercent.Percent = 101
	dup := o
	dup.Manifests = append(dup.Manifests, o.Manifests[0])
	tests := []struct {
		name    string
		payload []byte
		group   string
		want    error
	}{
		{"unsigned", with(good, "sig", ""), "gh", release.ErrSignature},
		{"release key", mustSignOffer(t, o, rel), "gh", release.ErrSignature},
		{"release purpose", mustSignOffer(t, o, purposeSigner{fleet, release.ReleasePurpose}), "gh", release.ErrSignature},
		{"command purpose", mustSignOffer(t, o, purposeSigner{fleet, "sensorpipe fleet command v1"}), "gh", release.ErrSignature},
		{"tampered percent", with(good, "offer", strings.Replace(string(raw(o)), `"percent":100`, `"percent":50`, 1)), "gh", release.ErrSignature},
		{"abort removed", with(mustSignOffer(t, aborted, fleet), "offer", string(raw(o))), "gh", release.ErrSignature},
		{"replayed to another group", good, "barns", release.ErrGroup},
		{"percent over 100", sealed(raw(badPercent)), "gh", release.ErrMalformed},
		{"two manifests for one arch", sealed(raw(dup)), "gh", release.ErrMalformed},
		{"unknown field", sealed([]byte(strings.Replace(string(raw(o)), `{`, `{"x":1,`, 1))), "gh", release.ErrMalformed},
		{"wire version", with(good, "v", "0"), "gh", release.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := release.OpenOffer(tt.payload, tt.group, fleet.Verifier()); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSignOfferValidates(t *testing.T) {
	rel, fleet := loadKeys(t)
	tests := []struct {
		name   string
		change func(*release.Offer)
	}{
		{"no rollout", func(o *release.Offer) { o.Rollout = "" }},
		{"no group", func(o *release.Offer) { o.Group = "" }},
		{"negative percent", func(o *release.Offer) { o.Percent = -1 }},
		{"NaN percent", func(o *release.Offer) { o.Percent = math.NaN() }},
		{"abort percent over 100", func(o *release.Offer) { o.AbortPercent = 150 }},
		{"state", func(o *release.Offer) { o.State = "paused" }},
		{"no issued", func(o *release.Offer) { o.Issued = time.Time{} }},
		{"no manifests", func(o *release.Offer) { o.Manifests = nil }},
		{"dev version", func(o *release.Offer) { o.Version = "dev" }},
		{"manifest of another version", func(o *release.Offer) { o.Version = "1.7.0" }},
		{"manifest not a manifest", func(o *release.Offer) { o.Manifests[0] = json.RawMessage(`{"v":1}`) }},
		{"manifest not compact", func(o *release.Offer) { o.Manifests[0] = append([]byte(" "), o.Manifests[0]...) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := offer(t, rel, "1.6.0")
			tt.change(&o)
			if _, err := release.SignOffer(o, fleet); !errors.Is(err, release.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func mustSignOffer(t *testing.T, o release.Offer, s release.Signer) []byte {
	t.Helper()
	b, err := release.SignOffer(o, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGolden pins the wire format: a manifest and an offer signed with
// the test keys open, and SignManifest and SignOffer produce them byte for
// byte (Ed25519 signatures are deterministic).
func TestGolden(t *testing.T) {
	rel, fleet := loadKeys(t)
	m := manifest("1.6.0", "arm64")
	m.MinVersion = "1.2.0"
	mp := mustSignManifest(t, m, rel)
	o := offer(t, rel, "1.6.0")
	o.Manifests = []json.RawMessage{mp}
	o.Percent, o.AbortPercent = 10, 30
	op := mustSignOffer(t, o, fleet)
	files := map[string][]byte{"testdata/edge-agent_1.6.0_arm64.manifest.json": mp, "testdata/offer-1.6.0.json": op}
	for name, b := range files {
		if *update {
			if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bytes.TrimSpace(want), b) {
			t.Errorf("%s changed:\n got %s\nwant %s", name, b, want)
		}
	}
	keys, err := sign.LoadVerifier("testdata/release.pub")
	if err != nil {
		t.Fatal(err)
	}
	fleetKeys, err := sign.LoadVerifier("testdata/fleet.pub")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("testdata/offer-1.6.0.json")
	got, err := release.OpenOffer(b, "gh", fleetKeys)
	if err != nil {
		t.Fatal(err)
	}
	gm, err := release.Decide(got, release.Device{ID: "pi-1", Group: "gh", Arch: "arm64", Version: "1.5.0"}, keys)
	if err != nil && !errors.Is(err, release.ErrNotInRollout) {
		t.Fatal(err)
	}
	if err == nil && gm != m {
		t.Fatalf("decided %+v", gm)
	}
}
