package release

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/edgepipe/sensorpipe/buffer/sign/envelope"
)

// Purposes the keys sign under, so a signature made for one kind of
// message never verifies as another (nor as a confirmation, a config
// document or a command).
const (
	// ReleasePurpose: the release key signs manifests.
	ReleasePurpose = "sensorpipe release v1"
	// OfferPurpose: the fleet key signs offers.
	OfferPurpose = "sensorpipe fleet update v1"
)

// Signer signs msg for purpose (*sign.Signer).
type Signer = envelope.Signer

// Verifier verifies sig over msg for purpose with pinned public keys
// (*sign.Verifier).
type Verifier = envelope.Verifier

const partManifest = "manifest"

// Manifest describes the binary of one release for one architecture.
type Manifest struct {
	Version string `json:"version"` // semver of the release
	Arch    string `json:"arch"`    // one of Archs
	Size    int64  `json:"size"`    // bytes of the binary
	SHA256  string `json:"sha256"`  // of the binary, lowercase hex
	URL     string `json:"url"`     // https URL to download the binary from
	// MinVersion, when set, is the oldest running version that may take
	// this release (say, one whose buffer format it cannot read).
	MinVersion string `json:"min_version,omitempty"`
}

// ManifestFile is the file name of a release's signed manifest for arch.
func ManifestFile(version, arch string) string {
	return "edge-agent_" + version + "_" + arch + ".manifest.json"
}

// BinaryFile is the file name of a release's binary for arch.
func BinaryFile(version, arch string) string {
	return "edge-agent_" + version + "_" + arch
}

// Validate returns an error wrapping ErrMalformed naming the first field
// that is not valid.
func (m Manifest) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: manifest: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	if err := ValidVersion(m.Version); err != nil {
		return bad("version: %v", err)
	}
	if !ValidArch(m.Arch) {
		return bad("arch %q (want one of %v)", m.Arch, Archs)
	}
	if m.Size <= 0 {
		return bad("size %d", m.Size)
	}
	if h, err := hex.DecodeString(m.SHA256); err != nil || len(h) != 32 || hex.EncodeToString(h) != m.SHA256 {
		return bad("sha256 %q is not 64 lowercase hex digits", m.SHA256)
	}
	u, err := url.Parse(m.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return bad("url %q is not an https URL", m.URL)
	}
	if m.MinVersion != "" {
		if err := ValidVersion(m.MinVersion); err != nil {
			return bad("min_version: %v", err)
		}
	}
	return nil
}

// SignManifest validates m and signs it with the release key: the bytes
// of the manifest file.
func SignManifest(m Manifest, s Signer) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return envelope.Seal(partManifest, raw, ReleasePurpose, s)
}

// OpenManifest verifies a signed manifest with the pinned release keys,
// decodes and validates it. Errors wrap ErrSignature or ErrMalformed.
func OpenManifest(payload []byte, v Verifier) (Manifest, error) {
	var m Manifest
	raw, err := envelope.Open(payload, partManifest, ReleasePurpose, v)
	if err != nil {
		return m, fmt.Errorf("manifest: %w", err)
	}
	if err := envelope.DecodeStrict(raw, &m); err != nil {
		return m, fmt.Errorf("%w: manifest: %w", ErrMalformed, err)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// ParseManifestUnverified decodes a signed manifest without checking its
// signature, to learn its arch and version (never to act on it).
func ParseManifestUnverified(payload []byte) (Manifest, error) {
	var m Manifest
	raw, err := envelope.Unverified(payload, partManifest)
	if err != nil {
		return m, fmt.Errorf("manifest: %w", err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, fmt.Errorf("%w: manifest: %w", ErrMalformed, err)
	}
	return m, nil
}
