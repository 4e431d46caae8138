package update

import "errors"

// Sentinel errors, for errors.Is. The text of each is what the heartbeat
// reports as the reason of a refusal or a rollback.
var (
	// ErrNotHTTPS is a manifest URL that is not https://.
	ErrNotHTTPS = errors.New("download URL is not https")
	// ErrTooLarge is a download larger than the manifest's size or than
	// update.max_size.
	ErrTooLarge = errors.New("download larger than the manifest's size")
	// ErrTruncated is a download that ended short of the manifest's size.
	ErrTruncated = errors.New("download truncated")
	// ErrHash is a file whose sha256 differs from the manifest's.
	ErrHash = errors.New("sha256 does not match the manifest")
	// ErrNoSpace is a filesystem with less than twice the download's size
	// free.
	ErrNoSpace = errors.New("not enough free space (twice the size is needed)")
	// ErrStateVersion is a state.json written in a format this version
	// does not know (by a newer agent); it is left as it is.
	ErrStateVersion = errors.New("state.json format unknown to this version")
	// ErrHTTP is a download server's answer other than 200 or 206.
	ErrHTTP = errors.New("download server refused")
)
