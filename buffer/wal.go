package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// The write-ahead log makes one group commit cost one write and one
// fdatasync, about what a bare write+fsync costs; a bbolt commit costs two
// fdatasyncs plus the tree's pages. Appends and deletes are acknowledged
// once they are in the log; a checkpoint moves them into bbolt in one
// ordinary (fully synced) bbolt transaction every few MiB or after a
// second of quiet, and then the log starts over.
//
// The log is one preallocated file, <path>.wal, rewritten from offset 0
// after each checkpoint. Each record carries the epoch that bbolt's meta
// bucket stored at the last checkpoint, so records left over from earlier
// epochs (further into the file) end the replay like a torn write does:
//
//	[0:4]  body length, big-endian
//	[4:8]  CRC-32C of the body
//	body:  epoch u64 | op byte | seq u64 | value (appends only)
const (
	walHeader  = 8
	walBodyMin = 8 + 1 + 8

	walAppend    = 'A'
	walDelete    = 'D'
	walDropBytes = 'B'
	walDropAge   = 'G'

	// walPrealloc is written with zeros when the log is created, so later
	// writes overwrite allocated blocks and fdatasync has no metadata to flush.
	walPrealloc = 4 << 20
	// walCheckpointAt: a checkpoint runs before a commit once the log holds
	// this much. Everything logged since the last checkpoint is also held in
	// memory (state.pending), and the checkpoint's bbolt transaction builds
	// its pages in memory too, so this bounds the agent's heap: with 2 MiB
	// the agent peaked at 23-25 MiB RssAnon taking 3,200 readings/s, with
	// 256 KiB at 12-16 MiB (agent/daemon BenchmarkBacklog, docs/PERFORMANCE.md),
	// and append throughput did not move (BenchmarkAppendParallel). At four
	// readings a second that is a checkpoint every few minutes.
	walCheckpointAt = 256 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func walPath(path string) string { return path + ".wal" }

func appendWAL(dst []byte, epoch uint64, op byte, seq uint64, val []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(walBodyMin+len(val)))
	crcAt := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	body := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, epoch)
	dst = append(dst, op)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = append(dst, val...)
	binary.BigEndian.PutUint32(dst[crcAt:], crc32.Checksum(dst[body:], castagnoli))
	return dst
}

type walRecord struct {
	op   byte
	seq  uint64
	val  []byte // aliases the log buffer
	size int64  // bytes in the log, header included
}

// parseWAL returns the valid records of epoch at the start of b, stopping
// at the first torn, stale or malformed one, and the offset where it stopped.
func parseWAL(b []byte, epoch uint64) ([]walRecord, int64) {
	var recs []walRecord
	off := 0
	for len(b)-off >= walHeader+walBodyMin {
		n := int(binary.BigEndian.Uint32(b[off:]))
		if n < walBodyMin || n > len(b)-off-walHeader {
			break
		}
		body := b[off+walHeader : off+walHeader+n]
		if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[off+4:]) {
			break
		}
		if binary.BigEndian.Uint64(body) != epoch {
			break
		}
		r := walRecord{op: body[8], seq: binary.BigEndian.Uint64(body[9:]), val: body[walBodyMin:], size: int64(walHeader + n)}
		switch r.op {
		case walAppend, walDelete, walDropBytes, walDropAge:
		default:
			return recs, int64(off)
		}
		recs = append(recs, r)
		off += walHeader + n
	}
	return recs, int64(off)
}

// scanWAL calls fn for every intact record anywhere in b, of any epoch,
// resynchronising byte by byte past garbage.
func scanWAL(b []byte, fn func(epoch uint64, op byte, seq uint64)) {
	for off := 0; len(b)-off >= walHeader+walBodyMin; {
		n := int(binary.BigEndian.Uint32(b[off:]))
		if n == 0 {
			// The preallocated zeros: a record's length field is never
			// all zero, so no record starts before the next non-zero byte
			// minus 3. Skip 8 bytes at a time.
			q := off
			for q+8 <= len(b) && binary.LittleEndian.Uint64(b[q:]) == 0 {
				q += 8
			}
			off = max(off+1, q-3)
			continue
		}
		if n < walBodyMin || n > len(b)-off-walHeader {
			off++
			continue
		}
		body := b[off+walHeader : off+walHeader+n]
		if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[off+4:]) {
			off++
			continue
		}
		fn(binary.BigEndian.Uint64(body), body[8], binary.BigEndian.Uint64(body[9:]))
		off += walHeader + n
	}
}

// maxWALSeq is the highest seq of any intact record in the log, of any
// epoch and any operation (a delete names a seq that was handed out), up
// to maxSaneSeq: what a damaged or lost buffer may have handed out beyond
// its bbolt file.
func maxWALSeq(b []byte) uint64 {
	var top uint64
	scanWAL(b, func(_ uint64, _ byte, seq uint64) {
		if seq <= maxSaneSeq {
			top = max(top, seq)
		}
	})
	return top
}

// countEpoch counts the intact records of epoch in b.
func countEpoch(b []byte, epoch uint64) int {
	n := 0
	scanWAL(b, func(e uint64, _ byte, _ uint64) {
		if e == epoch {
			n++
		}
	})
	return n
}

func readWAL(path string) ([]byte, error) {
	b, err := os.ReadFile(walPath(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// openWAL opens (creating and preallocating if needed) the log for
// writing, and returns its size. On a nearly full disk the preallocation
// is smaller or skipped (see preallocSize), never a reason not to start.
func openWAL(path string, log *slog.Logger) (*os.File, int64, error) {
	p := walPath(path)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|walSyncFlag, 0o600)
	if err != nil {
		return nil, 0, wrapNoSpace(fmt.Errorf("open buffer log %s: %w", p, err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open buffer log %s: %w", p, err)
	}
	cur := fi.Size()
	if cur >= walPrealloc {
		return f, cur, nil
	}
	free := freeBytes(filepath.Dir(p))
	size := preallocSize(cur, free)
	if err := preallocate(f, cur, size); err != nil {
		if !isNoSpace(err) {
			f.Close()
			return nil, 0, fmt.Errorf("preallocate buffer log %s: %w", p, err)
		}
		size = cur
	}
	if size < walPrealloc {
		log.Warn("disk nearly full: buffer log preallocated only in part; it grows when space returns",
			"path", p, "preallocated", size, "want", walPrealloc, "free_bytes", free)
	}
	return f, size, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// writeSync writes b at off, durably: the log is opened with walSyncFlag.
func writeSync(f *os.File, b []byte, off int64) error {
	_, err := f.WriteAt(b, off)
	return err
}
