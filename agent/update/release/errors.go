package release

import (
	"errors"

	"github.com/edgepipe/sensorpipe/buffer/sign/envelope"
)

// Sentinel errors; every refusal wraps one, so callers branch with
// errors.Is and the heartbeat reports the reason.
var (
	// ErrSignature: a manifest or an offer is unsigned, or no pinned key
	// verifies its signature under its purpose.
	ErrSignature = envelope.ErrSignature
	// ErrMalformed: a manifest or an offer does not decode or is not
	// valid (bad version, arch, size, hash, URL, percent or state).
	ErrMalformed = envelope.ErrMalformed
	// ErrGroup: the offer names another group than the topic it came on.
	ErrGroup = errors.New("offer for another group")
	// ErrReplayed: the offer was issued before the newest offer the
	// device has seen for its group: an old signed offer sent again (say,
	// the active offer of a rollout since aborted) is not taken.
	ErrReplayed = errors.New("offer older than one this device has seen (a replay)")
	// ErrAborted: the rollout was aborted.
	ErrAborted = errors.New("rollout aborted")
	// ErrNotInRollout: the device's bucket is not below the offer's
	// percent (yet).
	ErrNotInRollout = errors.New("device not in the rollout")
	// ErrNoArch: the offer has no manifest for the device's architecture.
	ErrNoArch = errors.New("no manifest for this architecture")
	// ErrNotNewer: the offered version is the running one or older;
	// downgrades are refused.
	ErrNotNewer = errors.New("offered version not newer than the running one")
	// ErrTooOld: the running version is below the release's min_version.
	ErrTooOld = errors.New("running version below the release's min_version")
	// ErrFailedBefore: this version rolled back on this device before.
	ErrFailedBefore = errors.New("version rolled back on this device before")
	// ErrNotRelease: the running agent is not a release build (its version
	// is not semver, e.g. "dev" or a git hash), so it takes no offers.
	ErrNotRelease = errors.New("not a release build")
)
