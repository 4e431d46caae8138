package release_test

import (
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// Fixed test keys (testdata/README.md): the release key signs manifests,
// the fleet key offers.
func loadKeys(t *testing.T) (rel, fleet *sign.Signer) {
	t.Helper()
	rel, err := sign.LoadSigner("testdata/release.key")
	if err != nil {
		t.Fatal(err)
	}
	fleet, err = sign.LoadSigner("testdata/fleet.key")
	if err != nil {
		t.Fatal(err)
	}
	return rel, fleet
}

// purposeSigner signs under a fixed purpose, whatever it is asked for: a
// key used for the wrong kind of message.
type purposeSigner struct {
	s       *sign.Signer
	purpose string
}

func (p purposeSigner) Sign(_ string, msg []byte) []byte { return p.s.Sign(p.purpose, msg) }

const hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func manifest(version, arch string) release.Manifest {
	return release.Manifest{
		Version: version, Arch: arch, Size: 4, SHA256: hash,
		URL: "https://releases.example/" + release.BinaryFile(version, arch),
	}
}

func mustSignManifest(t *testing.T, m release.Manifest, s release.Signer) []byte {
	t.Helper()
	b, err := release.SignManifest(m, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// offer is an active offer of version to every device of group "gh",
// with a manifest per arch signed by rel.
func offer(t *testing.T, rel release.Signer, version string) release.Offer {
	t.Helper()
	o := release.Offer{
		Rollout: "r-" + version, Group: "gh", Version: version, Percent: 100,
		State: release.StateActive, Issued: time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC),
	}
	for _, a := range release.Archs {
		o.Manifests = append(o.Manifests, mustSignManifest(t, manifest(version, a), rel))
	}
	return o
}
