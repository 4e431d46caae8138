package fleet

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/atomicfile"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// releaseSign is `fleet release`: a signed manifest beside each binary
// edge-agent_<version>_<arch> of DIR, with the release key
// (RELEASE_KEY_FILE). It needs no broker: releases are made where the
// key is, and published with `fleet update publish`.
func releaseSign(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet release", flag.ContinueOnError)
	fs.SetOutput(stderr)
	version := fs.String("version", "", "the release's `VERSION` (semver MAJOR.MINOR.PATCH), as built into the binaries")
	base := fs.String("url", "", "the https `URL` of the directory the binaries will be downloaded from")
	minVersion := fs.String("min-version", "", "the oldest running `VERSION` that may take this release (default: any)")
	keyFile := fs.String("key", "", "the release key `FILE` (default $RELEASE_KEY_FILE)")
	pos, err := parse(fs, args, 1, "the release DIR")
	if err != nil {
		return err
	}
	dir := pos[0]
	if err := release.ValidVersion(*version); err != nil {
		return cmdline.Usagef("--version: %v", err)
	}
	u, err := url.Parse(*base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return cmdline.Usagef("--url: %q is not an https URL (devices download over HTTPS only)", *base)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	signer, err := releaseSigner(getenv, *keyFile)
	if err != nil {
		return err
	}
	n := 0
	for _, arch := range release.Archs {
		bin := filepath.Join(dir, release.BinaryFile(*version, arch))
		size, sum, err := release.HashFile(bin)
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stdout, "%s: no binary, no manifest\n", arch)
			continue
		}
		if err != nil {
			return err
		}
		m := release.Manifest{Version: *version, Arch: arch, Size: size, SHA256: sum,
			URL: u.JoinPath(release.BinaryFile(*version, arch)).String(), MinVersion: *minVersion}
		b, err := release.SignManifest(m, signer)
		if err != nil {
			return cmdline.Usagef("%s: %v", bin, err)
		}
		out := filepath.Join(dir, release.ManifestFile(*version, arch))
		if err := atomicfile.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s (%d bytes, sha256 %s)\n", arch, out, size, sum)
		n++
	}
	if n == 0 {
		return cmdline.Usagef("%s: no binary named %s", dir, release.BinaryFile(*version, "ARCH"))
	}
	return nil
}

// releaseVerify is `fleet release verify`: every manifest of DIR opens
// with the public keys and its binary has the size and hash it signs.
func releaseVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet release verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keysFile := fs.String("keys", "", "the release public keys `FILE` (what the devices' update.keys_file holds)")
	pos, err := parse(fs, args, 1, "the release DIR")
	if err != nil {
		return err
	}
	if *keysFile == "" {
		return cmdline.Usagef("fleet release verify: --keys FILE is required")
	}
	keys, err := sign.LoadVerifier(*keysFile)
	if err != nil {
		return cmdline.Usagef("--keys: %v", err)
	}
	manifests, err := filepath.Glob(filepath.Join(pos[0], "edge-agent_*.manifest.json"))
	if err != nil {
		return err
	}
	if len(manifests) == 0 {
		return cmdline.Usagef("%s: no edge-agent_*.manifest.json", pos[0])
	}
	var bad []string
	for _, p := range manifests {
		if err := verifyManifest(p, keys); err != nil {
			fmt.Fprintf(stdout, "%s: FAILED: %v\n", filepath.Base(p), err)
			bad = append(bad, filepath.Base(p))
			continue
		}
		fmt.Fprintf(stdout, "%s: OK\n", filepath.Base(p))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d of %d manifests do not verify: %s", len(bad), len(manifests), strings.Join(bad, ", "))
	}
	return nil
}

// verifyManifest checks a manifest file the way a device checks what it
// downloads: signature, then the binary beside it by size and sha256.
func verifyManifest(path string, keys release.Verifier) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	m, err := release.OpenManifest(bytes.TrimSpace(b), keys)
	if err != nil {
		return err
	}
	if want := release.ManifestFile(m.Version, m.Arch); filepath.Base(path) != want {
		return fmt.Errorf("the manifest is for %s", want)
	}
	size, sum, err := release.HashFile(filepath.Join(filepath.Dir(path), release.BinaryFile(m.Version, m.Arch)))
	switch {
	case err != nil:
		return err
	case size != m.Size:
		return fmt.Errorf("binary of %d bytes, the manifest says %d", size, m.Size)
	case sum != m.SHA256:
		return fmt.Errorf("binary sha256 %s, the manifest says %s", sum, m.SHA256)
	}
	return nil
}

// releaseSigner loads the release key (--key, else RELEASE_KEY_FILE) and
// refuses the fleet key in its place: the two keys exist so that a leaked
// fleet key cannot make a release.
func releaseSigner(getenv func(string) string, keyFile string) (*sign.Signer, error) {
	if keyFile == "" {
		keyFile = getenv("RELEASE_KEY_FILE")
	}
	if keyFile == "" {
		return nil, cmdline.Usagef("RELEASE_KEY_FILE: required to sign a release (the release key, Ed25519 PEM; cloud-forwarder fleet keygen makes one; not the fleet key)")
	}
	s, err := sign.LoadSigner(keyFile)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return nil, cmdline.Usagef("RELEASE_KEY_FILE: cannot read %s: %v", keyFile, errors.Unwrap(err))
	}
	if err != nil {
		return nil, cmdline.Usagef("RELEASE_KEY_FILE: %s is not an Ed25519 private key in PEM PKCS#8 (openssl genpkey -algorithm ed25519)", keyFile)
	}
	if f := getenv("FLEET_KEY_FILE"); f != "" {
		if fk, err := sign.LoadSigner(f); err == nil && bytes.Equal(fk.PublicPEM(), s.PublicPEM()) {
			return nil, cmdline.Usagef("RELEASE_KEY_FILE: %s is the fleet key (FLEET_KEY_FILE); releases need their own key", keyFile)
		}
	}
	return s, nil
}
