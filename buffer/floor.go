package buffer

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Consumers drop duplicates by (device_id, seq), so a seq handed out twice
// loses the second reading. A buffer that starts with nothing (a first
// install, a deleted or re-imaged card, a 0-byte file after a power cut, a
// file moved aside as corrupt) cannot know what an earlier buffer of the
// same device handed out, so it starts above every bound it can find:
//
//   - evidence: the highest seq in whatever the old buffer left in its
//     directory (the log, of any epoch and any operation, and the files
//     moved aside as corrupt and their logs);
//   - time: the wall clock in Unix microseconds. Every earlier floor was
//     taken the same way, and a buffer appends far fewer than a million
//     readings a second, so earlier seqs lie below the microseconds of the
//     true time when they were handed out, and below the true time now;
//   - seqFloorMin, when the clock reads earlier (a Pi at 1970 before NTP):
//     no build of this code ran before it.
//
// When the clock reads before seqFloorMin, a random offset below
// seqFloorJitter is added to it, so that two fresh starts at 1970 (two
// first boots without network) do not start at the same seq; the offset is
// not added to a plausible clock, which keeps every floor at or below the
// true time (what the time bound relies on). Until a reading stamped by a synced clock arrives the floor is
// unconfirmed: if that reading shows that the clock was behind when the
// floor was taken, the sequence jumps to the true time of the start (docs/BUFFER.md, "Seqs after a lost
// buffer", gives the whole argument and its limits).
const (
	// seqFloorMin is 2026-11-01T00:00:00Z in Unix microseconds.
	seqFloorMin = 1_793_491_200_000_000
	// seqFloorJitter is 2^32 µs, about 72 minutes.
	seqFloorJitter = 1 << 32
	// seqFloorMax leaves 2^40 seqs (35,000 years at 1,000 readings a
	// second) below maxSaneSeq; a clock beyond it (year 2255) is ignored.
	seqFloorMax = maxSaneSeq - 1<<40
)

// freshFloor returns the sequence a fresh buffer at path starts from (its
// first seq is one above), and the evidence part of it for the log.
func freshFloor(path string, now time.Time) (floor, evidence uint64) {
	evidence = leftoverSeq(path)
	t := uint64(max(now.UnixMicro(), 0))
	if t < seqFloorMin || t > seqFloorMax {
		// A clock known to be wrong: 1970 before NTP, or centuries ahead.
		t = seqFloorMin + rand.Uint64N(seqFloorJitter)
	}
	return max(evidence, t), evidence
}

// leftoverSeq is the highest plausible seq found in what an earlier buffer
// left next to path: its log and the files moved aside as corrupt.
func leftoverSeq(path string) uint64 {
	var top uint64
	if log, err := readWAL(path); err == nil {
		top = maxWALSeq(log)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return top
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, base+corruptInfix) {
			continue
		}
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, ".wal") {
			if log, err := os.ReadFile(p); err == nil {
				top = max(top, maxWALSeq(log))
			}
			continue
		}
		if seq, err := salvageSequence(p); err == nil {
			top = max(top, seq)
		}
	}
	return top
}

// startFresh sets the floor of a buffer that has never handed out a seq.
func (s *state) startFresh(floor uint64) {
	s.next, s.durable, s.base = floor, floor, floor
	s.floor, s.unconfirmed = floor, true
}

// confirmTolerance: a floor less than this below the true time is left
// alone. An earlier buffer's last seq was handed out before it was lost,
// and a loss and a restart take longer than this, so such a floor is still
// above it; the tolerance absorbs the drift between the monotonic and the
// wall clock, so a clock that was right does not cause a jump.
const confirmTolerance = time.Second

// confirmFloor is called with the time of the first reading stamped by a
// synced clock while the floor is unconfirmed. The true time when this
// buffer was opened is that time minus the monotonic time elapsed since; if
// the floor is below it, the clock that set the floor was behind, and the
// sequence jumps there. The jump is checkpointed into bbolt before any seq
// above it is logged (the log's replay wants consecutive seqs). The caller
// holds commitMu.
func (b *Buffer) confirmFloor(ts time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.st
	trueOpen := ts.Add(-time.Since(b.opened))
	target := uint64(max(trueOpen.UnixMicro(), 0))
	if target <= s.next+uint64(confirmTolerance.Microseconds()) || target > seqFloorMax {
		s.unconfirmed = false // saved by the next checkpoint; until then a restart re-checks
		return
	}
	prev := *s
	if s.next == s.floor { // nothing handed out since the fresh start: the floor moves
		s.floor = target
	}
	s.next, s.unconfirmed = target, false
	if err := b.update(s.checkpointTx); err != nil {
		*s = prev
		b.log.Error("buffer: cannot raise the seq floor to the synced clock; will retry", "err", err)
		return
	}
	s.reset()
	b.log.Warn("buffer started while the clock was behind: seqs jump to the synced time",
		"from_seq", prev.next, "next_seq", target+1, "clock_was_behind", time.Duration(target-prev.next)*time.Microsecond)
}

// firstSynced returns the timestamp of the first reading in batch stamped
// by a synced clock.
func firstSynced(batch []*request) (time.Time, bool) {
	for _, req := range batch {
		for _, r := range req.rs {
			if r.TimeSynced {
				return r.TS, true
			}
		}
	}
	return time.Time{}, false
}
