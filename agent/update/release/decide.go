package release

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// Device is what Decide needs to know about the device it runs on.
type Device struct {
	ID      string
	Group   string // fleet.group; empty: not checked
	Arch    string // RunningArch()
	Version string // the running agent's version
	// Failed lists versions that rolled back on this device.
	Failed []string
	// NewestOffer is the latest Issued of the offers the device has seen
	// for its group; an offer issued before it is a replay. Zero: none.
	NewestOffer time.Time
}

// Bucket places a device in [0,100): the first 8 bytes of
// sha256("sensorpipe rollout\x00"+id), big-endian, as a fraction of 2^64
// (to 53 bits), times 100. It is stable, so a device that was in a rollout
// at 10 % is still in it at 50 %, and the operator's tool computes the
// same for every device.
func Bucket(deviceID string) float64 {
	h := sha256.Sum256([]byte("sensorpipe rollout\x00" + deviceID))
	u := binary.BigEndian.Uint64(h[:8]) >> 11 // 53 bits: exact in a float64, so < 100
	return float64(u) / (1 << 53) * 100
}

// InRollout reports whether the device takes an active offer of percent.
func InRollout(deviceID string, percent float64) bool { return Bucket(deviceID) < percent }

// Decide says whether dev takes offer (already opened with OpenOffer):
// the manifest for dev's arch, verified with the pinned release keys, or
// an error wrapping the reason: ErrGroup, ErrReplayed, ErrAborted, ErrNotRelease,
// ErrNotInRollout, ErrNoArch, ErrSignature, ErrMalformed, ErrFailedBefore,
// ErrNotNewer or ErrTooOld, checked in that order.
func Decide(offer Offer, dev Device, releaseKeys Verifier) (Manifest, error) {
	if dev.Group != "" && offer.Group != dev.Group {
		return Manifest{}, fmt.Errorf("%w: offer for %q, device in %q", ErrGroup, offer.Group, dev.Group)
	}
	if offer.Issued.Before(dev.NewestOffer) {
		return Manifest{}, fmt.Errorf("%w: issued %s, the device has seen one of %s", ErrReplayed,
			offer.Issued.UTC().Format(time.RFC3339Nano), dev.NewestOffer.UTC().Format(time.RFC3339Nano))
	}
	if offer.State == StateAborted {
		return Manifest{}, fmt.Errorf("%w: rollout %s", ErrAborted, offer.Rollout)
	}
	if offer.State != StateActive {
		return Manifest{}, fmt.Errorf("%w: offer state %q", ErrMalformed, offer.State)
	}
	if err := ValidVersion(dev.Version); err != nil {
		return Manifest{}, fmt.Errorf("running version: %w", err)
	}
	if b := Bucket(dev.ID); !(b < offer.Percent) {
		return Manifest{}, fmt.Errorf("%w: bucket %.2f, rollout at %v %%", ErrNotInRollout, b, offer.Percent)
	}
	m, err := manifestFor(offer, dev.Arch, releaseKeys)
	if err != nil {
		return Manifest{}, err
	}
	if c, err := CompareVersions(m.Version, offer.Version); err != nil || c != 0 {
		return Manifest{}, fmt.Errorf("%w: manifest of version %s in an offer of %s", ErrMalformed, m.Version, offer.Version)
	}
	for _, f := range dev.Failed {
		if c, err := CompareVersions(f, m.Version); err == nil && c == 0 {
			return Manifest{}, fmt.Errorf("%w: %s", ErrFailedBefore, m.Version)
		}
	}
	if c, _ := CompareVersions(m.Version, dev.Version); c <= 0 {
		return Manifest{}, fmt.Errorf("%w: offered %s, running %s", ErrNotNewer, m.Version, dev.Version)
	}
	if m.MinVersion != "" {
		if c, _ := CompareVersions(dev.Version, m.MinVersion); c < 0 {
			return Manifest{}, fmt.Errorf("%w: running %s, min_version %s", ErrTooOld, dev.Version, m.MinVersion)
		}
	}
	return m, nil
}

// manifestFor verifies and returns the offer's manifest for arch. Only
// that one is verified: the others are for other devices.
func manifestFor(offer Offer, arch string, keys Verifier) (Manifest, error) {
	for _, raw := range offer.Manifests {
		u, err := ParseManifestUnverified(raw)
		if err != nil || u.Arch != arch {
			continue
		}
		return OpenManifest(raw, keys)
	}
	return Manifest{}, fmt.Errorf("%w: %s (offer %s)", ErrNoArch, arch, offer.Version)
}
