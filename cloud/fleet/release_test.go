package fleet_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// TestRelease: fleet release signs a manifest per binary that verifies
// with the release public key, as a device checks it; a tampered binary
// or manifest, or one signed by another key, fails verify.
func TestRelease(t *testing.T) {
	r := &rig{t: t, dir: t.TempDir(), env: map[string]string{}}
	relKey, relPub := filepath.Join(r.dir, "release.key"), filepath.Join(r.dir, "release.pub")
	fleetKey, fleetPub := filepath.Join(r.dir, "fleet.key"), filepath.Join(r.dir, "fleet.pub")
	if out, err := r.run("keygen", "--release", relKey, relPub); err != nil || !strings.Contains(out, "update.keys_file") {
		t.Fatalf("keygen --release: %v\n%s", err, out)
	}
	if out, err := r.run("keygen", fleetKey, fleetPub); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	dir := filepath.Join(r.dir, "1.6.0")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bins := map[string][]byte{}
	for _, a := range []string{"armv7", "arm64", "amd64"} {
		bins[a] = []byte("edge-agent 1.6.0 for " + a)
		r.write(filepath.Join("1.6.0", release.BinaryFile("1.6.0", a)), string(bins[a]))
	}
	args := []string{"release", "--version", "1.6.0", "--url", "https://releases.example/edge/1.6.0", dir}

	refused := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no key", map[string]string{}, args, "RELEASE_KEY_FILE: required"},
		{"fleet key as release key", map[string]string{"RELEASE_KEY_FILE": fleetKey, "FLEET_KEY_FILE": fleetKey}, args, "is the fleet key"},
		{"public key", map[string]string{"RELEASE_KEY_FILE": relPub}, args, "not an Ed25519 private key"},
		{"dev version", map[string]string{"RELEASE_KEY_FILE": relKey}, []string{"release", "--version", "dev", "--url", "https://r.example/", dir}, "not MAJOR.MINOR.PATCH"},
		{"http url", map[string]string{"RELEASE_KEY_FILE": relKey}, []string{"release", "--version", "1.6.0", "--url", "http://r.example/", dir}, "not an https URL"},
		{"no binaries", map[string]string{"RELEASE_KEY_FILE": relKey}, []string{"release", "--version", "1.7.0", "--url", "https://r.example/", dir}, "no binary named"},
	}
	for _, tt := range refused {
		r.env = tt.env
		if out, err := r.run(tt.args...); !errors.Is(err, cmdline.ErrUsage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want a usage error with %q\n%s", tt.name, err, tt.want, out)
		}
	}

	r.env = map[string]string{"RELEASE_KEY_FILE": relKey, "FLEET_KEY_FILE": fleetKey}
	out, err := r.run(args...)
	if err != nil {
		t.Fatalf("release: %v\n%s", err, out)
	}
	if !strings.Contains(out, "armv6: no binary") {
		t.Errorf("a missing arch is not mentioned:\n%s", out)
	}
	keys, err := sign.LoadVerifier(relPub)
	if err != nil {
		t.Fatal(err)
	}
	for a, bin := range bins {
		p, err := os.ReadFile(filepath.Join(dir, release.ManifestFile("1.6.0", a)))
		if err != nil {
			t.Fatal(err)
		}
		m, err := release.OpenManifest(bytes.TrimSpace(p), keys)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if m.Arch != a || m.Version != "1.6.0" || m.Size != int64(len(bin)) ||
			m.URL != "https://releases.example/edge/1.6.0/edge-agent_1.6.0_"+a {
			t.Errorf("%s: manifest %+v", a, m)
		}
	}
	if out, err := r.run("release", "verify", "--keys", relPub, dir); err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if out, err := r.run("release", "verify", "--keys", fleetPub, dir); err == nil || !strings.Contains(out, "signature not verified") {
		t.Fatalf("verify with the fleet key's public key: %v\n%s", err, out)
	}

	// Tampered binary: same size, one byte changed; then a longer one.
	armv7 := filepath.Join(dir, release.BinaryFile("1.6.0", "armv7"))
	r.write(filepath.Join("1.6.0", release.BinaryFile("1.6.0", "armv7")), strings.Replace(string(bins["armv7"]), "e", "E", 1))
	if out, err := r.run("release", "verify", "--keys", relPub, dir); err == nil || !strings.Contains(out, "armv7.manifest.json: FAILED: binary sha256") {
		t.Fatalf("tampered binary: %v\n%s", err, out)
	}
	if err := os.WriteFile(armv7, append(bins["armv7"], '!'), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := r.run("release", "verify", "--keys", relPub, dir); err == nil || !strings.Contains(out, "armv7.manifest.json: FAILED: binary of") {
		t.Fatalf("longer binary: %v\n%s", err, out)
	}
	if err := os.WriteFile(armv7, bins["armv7"], 0o755); err != nil {
		t.Fatal(err)
	}
	// Tampered manifest: the size and hash of another binary.
	mf := filepath.Join(dir, release.ManifestFile("1.6.0", "arm64"))
	p, _ := os.ReadFile(mf)
	tampered := strings.Replace(string(p), `"size":`+itoa(len(bins["arm64"])), `"size":`+itoa(len(bins["arm64"])+1), 1)
	if tampered == string(p) {
		t.Fatal("the manifest has no size to tamper with")
	}
	if err := os.WriteFile(mf, []byte(tampered), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := r.run("release", "verify", "--keys", relPub, dir); err == nil || !strings.Contains(out, "arm64.manifest.json: FAILED: manifest: signature not verified") {
		t.Fatalf("tampered manifest: %v\n%s", err, out)
	}
	// A manifest renamed to pass for another arch.
	if err := os.WriteFile(mf, p, 0o644); err != nil {
		t.Fatal(err)
	}
	amd := filepath.Join(dir, release.ManifestFile("1.6.0", "amd64"))
	if err := os.WriteFile(amd, p, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := r.run("release", "verify", "--keys", relPub, dir); err == nil || !strings.Contains(out, "amd64.manifest.json: FAILED: the manifest is for edge-agent_1.6.0_arm64") {
		t.Fatalf("renamed manifest: %v\n%s", err, out)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
