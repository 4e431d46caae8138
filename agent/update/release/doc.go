// Package release is what the operator's tool and the agent share about
// over-the-air updates (docs/DESIGN.md, "Over-the-air updates"): signed
// release manifests, signed update offers, versions and architectures,
// the rollout bucket of a device, and Decide, the one function that says
// whether a device takes an offer.
//
// A Manifest describes one binary of a release for one architecture. The
// operator signs it with the release key (ReleasePurpose), which lives
// only with whoever builds releases; devices pin its public keys in
// update.keys_file. An Offer names a release for a group, the share of the
// group that takes it (Percent, by Bucket) and whether it is aborted; it
// carries the signed manifests and is signed with the fleet key
// (OfferPurpose), so a leaked fleet key can only offer releases the release
// key signed. Both travel in the envelope of buffer/sign/envelope.
//
// The package neither downloads nor installs (agent/update does), nor
// publishes (cloud/fleet does).
package release
