package buffer

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// isNoSpace reports a full disk or an exhausted quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// wrapNoSpace adds ErrNoSpace to an error caused by a full disk, so callers
// can tell "cannot store" from other failures with errors.Is.
func wrapNoSpace(err error) error {
	if err != nil && isNoSpace(err) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// The log's preallocation (walPrealloc) is what lets an append cost one
// data write. On a nearly full disk it must not stop the agent from
// starting: the log takes at most a quarter of the free space (none below
// walMinPrealloc) and grows to its full size later, at an idle checkpoint,
// once twice walPrealloc is free. Writes past the preallocated part still
// work, each paying for a metadata update.
const walMinPrealloc = 64 << 10

// freeBytes is the space available to us in dir's filesystem, or -1.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// preallocSize is how far to preallocate a log of size cur with free bytes
// free on its disk (-1: unknown).
func preallocSize(cur, free int64) int64 {
	want := int64(walPrealloc)
	if free >= 0 && free < 2*walPrealloc {
		want = cur + (free/4)&^4095
		if want-cur < walMinPrealloc {
			return cur
		}
	}
	return max(cur, want)
}

// preallocate extends f (of size cur) with zeros up to size, durably.
// On failure it cuts f back to cur, so a disk that filled up meanwhile
// is not left fuller by a half-written tail.
func preallocate(f *os.File, cur, size int64) error {
	if size <= cur {
		return nil
	}
	if _, err := f.WriteAt(make([]byte, size-cur), cur); err != nil { // synchronous: walSyncFlag
		_ = f.Truncate(cur)
		return err
	}
	syncDir(filepath.Dir(f.Name()))
	return nil
}

// growWAL retries the full preallocation of a log that started short.
// The writer calls it at idle checkpoints; it holds commitMu.
func (b *Buffer) growWAL() {
	if b.walSize >= walPrealloc || time.Since(b.lastGrow) < walGrowEvery {
		return
	}
	b.lastGrow = time.Now()
	if free := freeBytes(filepath.Dir(b.path)); free >= 0 && free < 2*walPrealloc {
		return
	}
	if err := preallocate(b.wal, b.walSize, walPrealloc); err != nil {
		b.log.Debug("buffer log: preallocation still fails", "err", err)
		return
	}
	b.log.Info("buffer log preallocated in full: disk space is back", "path", walPath(b.path), "bytes", walPrealloc)
	b.walSize = walPrealloc
}

// walGrowEvery spaces out growWAL's attempts.
const walGrowEvery = 10 * time.Second

// throttle lets one log line through per throttleEvery for a repeating
// failure, and says how many it held back; a full disk must not flood the
// journal (which is often on the same disk). Used under commitMu.
type throttle struct {
	failing    bool
	last       time.Time
	suppressed int
}

const throttleEvery = time.Minute

func (t *throttle) fail(log *slog.Logger, msg string, args ...any) {
	if t.failing && time.Since(t.last) < throttleEvery {
		t.suppressed++
		return
	}
	log.Error(msg, append(args, "not_logged_since_last", t.suppressed, "next_log_in", throttleEvery.String())...)
	t.failing, t.last, t.suppressed = true, time.Now(), 0
}

func (t *throttle) ok(log *slog.Logger, msg string) {
	if t.failing {
		log.Info(msg, "not_logged", t.suppressed)
	}
	t.failing, t.suppressed = false, 0
}
