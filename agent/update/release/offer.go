package release

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/sign/envelope"
)

// Offer states.
const (
	StateActive  = "active"
	StateAborted = "aborted"
)

const partOffer = "offer"

// Offer is what the operator publishes, retained, on a group's update
// topic (OfferTopic), signed with the fleet key.
type Offer struct {
	// Rollout identifies the rollout; it stays the same when only the
	// percent changes, so heartbeats of one rollout are counted together.
	Rollout string `json:"rollout"`
	Group   string `json:"group"`
	Version string `json:"version"`
	// Percent of the group takes the offer: devices whose Bucket is
	// below it (0..100).
	Percent float64 `json:"percent"`
	// AbortPercent is the failure rate (failures / devices that took it,
	// in percent) at which the operator's tool aborts; 0: never. Devices
	// ignore it.
	AbortPercent float64   `json:"abort_percent,omitempty"`
	State        string    `json:"state"`
	Issued       time.Time `json:"issued"`
	// Manifests are signed manifest envelopes (SignManifest), one per
	// arch, exactly as the release key signed them.
	Manifests []json.RawMessage `json:"manifests"`
}

// NextIssued is the Issued of an offer that replaces prev (nil: none):
// now, or just after prev's when now is not later (another operator's
// clock behind), since devices refuse an offer issued before the newest
// they have seen (ErrReplayed).
func NextIssued(prev *Offer, now time.Time) time.Time {
	if prev != nil && !now.After(prev.Issued) {
		return prev.Issued.Add(time.Millisecond)
	}
	return now
}

// OfferTopic is the retained topic of a group's offer; devices subscribe
// to {prefix}/$group/+/update and only the operator may publish there.
func OfferTopic(prefix, group string) string { return prefix + "/$group/" + group + "/update" }

// Validate returns an error wrapping ErrMalformed naming the first field
// that is not valid. It does not verify the manifests' signatures (the
// fleet key's holder need not have the release keys); it checks that
// each decodes, is of the offer's version, and that no arch repeats.
func (o Offer) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: offer: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	switch {
	case o.Rollout == "":
		return bad("no rollout id")
	case o.Group == "":
		return bad("no group")
	case !(o.Percent >= 0 && o.Percent <= 100):
		return bad("percent %v is not in 0..100", o.Percent)
	case !(o.AbortPercent >= 0 && o.AbortPercent <= 100):
		return bad("abort_percent %v is not in 0..100", o.AbortPercent)
	case o.State != StateActive && o.State != StateAborted:
		return bad("state %q (want %q or %q)", o.State, StateActive, StateAborted)
	case o.Issued.IsZero():
		return bad("no issued time")
	case len(o.Manifests) == 0:
		return bad("no manifests")
	}
	if err := ValidVersion(o.Version); err != nil {
		return bad("version: %v", err)
	}
	seen := map[string]bool{}
	for i, raw := range o.Manifests {
		m, err := ParseManifestUnverified(raw)
		if err != nil {
			return bad("manifest %d: %v", i+1, err)
		}
		if c, err := CompareVersions(m.Version, o.Version); err != nil || c != 0 {
			return bad("manifest %d is of version %q, the offer of %q", i+1, m.Version, o.Version)
		}
		if seen[m.Arch] {
			return bad("two manifests for arch %q", m.Arch)
		}
		seen[m.Arch] = true
		var c bytes.Buffer
		if err := json.Compact(&c, raw); err != nil || !bytes.Equal(c.Bytes(), raw) {
			return bad("manifest %d is not compact JSON (sign it with SignManifest)", i+1)
		}
	}
	return nil
}

// SignOffer validates o and signs it with the fleet key: the payload to
// publish retained on OfferTopic.
func SignOffer(o Offer, s Signer) ([]byte, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// Keep the manifests' bytes as signed: no HTML escaping inside them.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(o); err != nil {
		return nil, fmt.Errorf("encode offer: %w", err)
	}
	return envelope.Seal(partOffer, bytes.TrimSuffix(b.Bytes(), []byte("\n")), OfferPurpose, s)
}

// OpenOffer verifies an offer with the pinned fleet keys, decodes and
// validates it, and checks it names group, the group of the topic it
// arrived on (ErrGroup otherwise). It does not verify the manifests:
// Decide does, for the device's arch.
func OpenOffer(payload []byte, group string, v Verifier) (Offer, error) {
	var o Offer
	raw, err := envelope.Open(payload, partOffer, OfferPurpose, v)
	if err != nil {
		return o, fmt.Errorf("offer: %w", err)
	}
	if err := envelope.DecodeStrict(raw, &o); err != nil {
		return Offer{}, fmt.Errorf("%w: offer: %w", ErrMalformed, err)
	}
	if err := o.Validate(); err != nil {
		return Offer{}, err
	}
	if o.Group != group {
		return Offer{}, fmt.Errorf("%w: offer names group %q, topic %q", ErrGroup, o.Group, group)
	}
	return o, nil
}

// ParseOfferUnverified decodes an offer without checking its signature,
// for the operator's tool, which reads back what it published.
func ParseOfferUnverified(payload []byte) (Offer, error) {
	var o Offer
	raw, err := envelope.Unverified(payload, partOffer)
	if err != nil {
		return o, fmt.Errorf("offer: %w", err)
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return o, fmt.Errorf("%w: offer: %w", ErrMalformed, err)
	}
	return o, nil
}
