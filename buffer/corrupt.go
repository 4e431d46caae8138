package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// guard arms the current goroutine so that a memory fault (a damaged file
// read through bbolt's mmap: SIGBUS on a truncated file) panics instead of
// killing the process, and returns the deferred function that turns that
// panic, or one of bbolt's own, into an ErrCorrupt error:
//
//	defer guard(&err)()
func guard(err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			*err = fmt.Errorf("%w: bbolt panicked: %v", ErrCorrupt, p)
		}
	}
}

// openBolt is bolt.Open that survives a panic or memory fault inside it
// (bbolt reads the freelist during Open) and then releases the file: the
// descriptor, and with it the flock, would otherwise leak.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	var f *os.File
	o.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		ff, err := os.OpenFile(name, flag, perm)
		f = ff
		return ff, err
	}
	defer func() {
		if db == nil && f != nil {
			// bbolt's mmap still references the open file, which keeps the
			// flock alive after close; unlock explicitly. The mapping itself
			// leaks until exit (bbolt does not tell us its address).
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			_ = f.Close() // an error if bbolt already closed it
		}
	}()
	defer guard(&err)()
	return bolt.Open(path, 0o600, o)
}

// isEnvErrno reports errors of the machine, not of the file's content.
func isEnvErrno(err error) bool {
	for _, e := range []syscall.Errno{syscall.ENOSPC, syscall.EROFS, syscall.EIO, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// checkTx is the open-time check. The quick form reads the few pages that
// locate the data (file size against bbolt's high-water mark, the buckets,
// the counters, the first and last record, fully decoded); the full form
// also walks every record's key and header (checksum included) and
// compares the counters. A record that fails its own checks is passed to
// damaged (nil: ignored), not reported as a damaged file.
func checkTx(tx *bolt.Tx, path string, full bool, damaged func(seq uint64, err error)) error {
	if damaged == nil {
		damaged = func(uint64, error) {}
	}
	if fs := fileSize(path); fs < tx.Size() {
		return fmt.Errorf("%w: file is %d bytes but bbolt needs %d (truncated)", ErrCorrupt, fs, tx.Size())
	}
	rb := tx.Bucket([]byte(bucketReadings))
	if rb == nil {
		return fmt.Errorf("%w: readings bucket missing", ErrCorrupt)
	}
	cnt, err := loadCounters(tx)
	if err != nil {
		return err
	}
	c := rb.Cursor()
	for _, kv := range [][2][]byte{pair(c.First()), pair(c.Last())} {
		if kv[0] == nil {
			continue
		}
		seq, err := keySeq(kv[0])
		if err != nil {
			return err
		}
		if seq > rb.Sequence() {
			return fmt.Errorf("%w: record seq %d above the bucket sequence %d", ErrCorrupt, seq, rb.Sequence())
		}
		if _, err := decodeRecord(seq, kv[1]); isDamaged(err) {
			damaged(seq, err)
		} else if err != nil && !isNewer(err) {
			return err
		}
	}
	if !full {
		return nil
	}
	w, err := walkHeaders(tx, damaged)
	if err != nil {
		return err
	}
	if w.count != cnt.count || w.live != cnt.live {
		return fmt.Errorf("%w: counters say %d readings / %d bytes, the file holds %d / %d",
			ErrCorrupt, cnt.count, cnt.live, w.count, w.live)
	}
	return nil
}

func pair(k, v []byte) [2][]byte { return [2][]byte{k, v} }

// decodeRecord checks one stored value fully: header, checksum, wire
// format, and that the payload's seq and sensor match the key and header.
// Its errors wrap errDamaged.
func decodeRecord(seq uint64, v []byte) (reading.Reading, error) {
	h, err := parseValue(v)
	if err != nil {
		return reading.Reading{}, fmt.Errorf("seq %d: %w", seq, err)
	}
	r, err := reading.Parse(h.payload) // not Decode: a reading stamped at 1970 is kept
	if err != nil {
		return r, fmt.Errorf("%w: seq %d: %w", errDamaged, seq, err)
	}
	if r.Seq != seq || r.Sensor != string(h.sensor) {
		return r, fmt.Errorf("%w: seq %d: payload says seq %d sensor %q, header says sensor %q", errDamaged, seq, r.Seq, r.Sensor, h.sensor)
	}
	r.Boot = h.boot
	return r, nil
}

type walkResult struct {
	count, live uint64
	first, last uint64
	newer       uint64 // records of a format a newer build wrote (walk only)
}

// walkHeaders is walk without the JSON decode: it touches every page of
// the tree and checks keys, order, headers and checksums, at a fraction of
// the cost. Damaged records go to damaged and are counted like the others.
func walkHeaders(tx *bolt.Tx, damaged func(seq uint64, err error)) (walkResult, error) {
	return scan(tx, func(seq uint64, v []byte) error {
		if _, err := parseValue(v); isDamaged(err) {
			damaged(seq, fmt.Errorf("seq %d: %w", seq, err))
		}
		return nil
	})
}

// walk decodes every record in seq order: fn sees each good one, damaged
// each damaged one, and both are counted.
func walk(tx *bolt.Tx, fn func(seq uint64, r *reading.Reading) error, damaged func(seq uint64, err error)) (walkResult, error) {
	var newer uint64
	w, err := scan(tx, func(seq uint64, v []byte) error {
		r, err := decodeRecord(seq, v)
		if isDamaged(err) {
			damaged(seq, err)
			return nil
		}
		if isNewer(err) { // kept for the build that wrote it
			newer++
			return nil
		}
		if err != nil || fn == nil {
			return err
		}
		return fn(seq, &r)
	})
	w.newer = newer
	return w, err
}

// scan visits every record in key order, checking that keys are valid and
// strictly increasing, and totals what it saw. It stops at visit's first error.
func scan(tx *bolt.Tx, visit func(seq uint64, v []byte) error) (walkResult, error) {
	var w walkResult
	c := tx.Bucket([]byte(bucketReadings)).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		seq, err := keySeq(k)
		if err != nil {
			return w, err
		}
		if seq <= w.last {
			return w, fmt.Errorf("%w: seq %d after %d", ErrCorrupt, seq, w.last)
		}
		if err := visit(seq, v); err != nil {
			return w, err
		}
		if w.count == 0 {
			w.first = seq
		}
		w.last = seq
		w.count++
		w.live += uint64(len(k) + len(v))
	}
	return w, nil
}

// corruptInfix names the files a damaged buffer is moved aside to:
// <path>.corrupt-<UTC time> and its log.
const corruptInfix = ".corrupt-"

// corruptKeep is how many moved-aside buffers (each with its log) are
// kept: a card that keeps corrupting the file must not fill up with copies.
const corruptKeep = 3

// trimCorrupt deletes all but the newest corruptKeep moved-aside buffers
// next to path, with their logs, and logs what it deleted.
func trimCorrupt(path string, logger *slog.Logger) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var aside []string // names sort by their UTC time
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, base+corruptInfix) && !strings.HasSuffix(n, ".wal") {
			aside = append(aside, n)
		}
	}
	slices.Sort(aside)
	for _, n := range aside[:max(0, len(aside)-corruptKeep)] {
		p := filepath.Join(dir, n)
		err := errors.Join(os.Remove(p), ignoreNotExist(os.Remove(walPath(p))))
		if err != nil {
			logger.Warn("buffer: cannot delete an old moved-aside buffer", "path", p, "err", err)
			continue
		}
		logger.Warn("buffer: deleted an old moved-aside buffer (only the newest are kept)", "path", p, "kept", corruptKeep)
	}
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// recoverCorrupt moves the damaged file (and its log) aside and opens a
// fresh one. Open then starts its sequence above anything the moved-aside
// files still show and above the clock (freshFloor), so no
// (device_id, seq) is reused (consumers dedupe on it).
func recoverCorrupt(path string, opts Options, cause error) (*bolt.DB, *state, error) {
	now := time.Now().UTC()
	aside := path + corruptInfix + now.Format("20060102T150405.000Z")
	for i := 1; exists(aside) || exists(walPath(aside)); i++ { // two in one millisecond
		aside = fmt.Sprintf("%s%s%s-%d", path, corruptInfix, now.Format("20060102T150405.000Z"), i)
	}
	if err := os.Rename(path, aside); err != nil {
		return nil, nil, fmt.Errorf("move corrupt buffer %s aside: %w (cause: %w)", path, err, cause)
	}
	if err := os.Rename(walPath(path), walPath(aside)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("move buffer log %s aside: %w", walPath(path), err)
	}
	opts.Logger.Error("buffer file is corrupt; moved aside, starting a fresh buffer",
		"path", path, "moved_to", aside, "err", cause)
	return openChecked(path, opts)
}

// salvageSequence reads the highest seq a damaged file had handed out.
func salvageSequence(path string) (seq uint64, err error) {
	db, err := openBolt(path, boltOptions(true, time.Second))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	defer guard(&err)()
	err = db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket([]byte(bucketReadings))
		if rb == nil {
			return fmt.Errorf("%w: readings bucket missing", ErrCorrupt)
		}
		seq = rb.Sequence()
		if k, _ := rb.Cursor().Last(); len(k) == keyLen {
			seq = max(seq, mustSeq(k))
		}
		return nil
	})
	if err == nil && seq > maxSaneSeq {
		return 0, fmt.Errorf("%w: salvaged sequence %d is implausible", ErrCorrupt, seq)
	}
	return seq, err
}

// maxSaneSeq is 2^53 (reading.MaxSeq): JSON consumers that parse numbers
// as doubles keep seqs below it exact, and a garbage sequence from a
// damaged page is likely above it.
const maxSaneSeq = reading.MaxSeq

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func mustSeq(k []byte) uint64 {
	s, _ := keySeq(k)
	return s
}
