package buffer

import (
	"errors"
	"fmt"
)

// Sentinel errors; callers branch on them with errors.Is.
var (
	// ErrLocked is returned by OpenReadOnly (and Open) when another process,
	// normally the running agent, holds the file's lock past the timeout.
	ErrLocked = errors.New("buffer file is locked by another process")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("buffer is closed")
	// ErrReadOnly is returned by writing methods of a buffer opened with OpenReadOnly.
	ErrReadOnly = errors.New("buffer is opened read-only")
	// ErrCorrupt is wrapped by errors caused by a damaged file: bbolt's meta
	// pages, the B+tree, or a stored value that no longer decodes.
	ErrCorrupt = errors.New("buffer file is corrupt")
	// ErrInvalidReading is wrapped when Append is given a reading that could
	// never be published (bad names, no values, oversized).
	ErrInvalidReading = errors.New("reading cannot be buffered")
	// ErrNoSpace is wrapped, together with the system's ENOSPC or EDQUOT,
	// by errors of Open, Append, Delete and the other writes when the disk
	// (or the quota) is full: the buffer cannot store, which is neither a
	// sensor's fault nor a damaged file. It clears once space returns.
	ErrNoSpace = errors.New("no space left for the buffer")
)

// errDamaged is wrapped by errors about one stored record (a checksum that
// fails, a header or payload that does not parse): the record is moved
// aside, not the file. It wraps ErrCorrupt for callers outside.
var errDamaged = fmt.Errorf("%w: damaged record", ErrCorrupt)

func isCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }

func isDamaged(err error) bool { return errors.Is(err, errDamaged) }

// errNewerFormat is returned by parseValue for a record whose format byte
// this build does not know: a newer build wrote it before a downgrade.
// Such a record is not damaged and is never deleted: it is skipped by
// every reader and by the bounds, and kept for the newer build.
var errNewerFormat = errors.New("buffer record written by a newer version")

func isNewer(err error) bool { return errors.Is(err, errNewerFormat) }
