package buffer

import (
	"bytes"
	"testing"
)

func TestScanWAL(t *testing.T) {
	var log []byte
	log = appendWAL(log, 7, walAppend, 1, []byte("value-1"))
	log = appendWAL(log, 7, walDelete, 1, nil)
	torn := len(log)
	log = appendWAL(log, 7, walAppend, 2, []byte("value-2"))
	log[torn+walHeader+3] ^= 0xff // damage the third record's body
	log = append(log, make([]byte, 1000)...)
	log = appendWAL(log, 7, walAppend, 3, []byte("value-3"))
	log = append(log, 0xde, 0xad, 0xbe, 0xef, 0, 0)
	log = appendWAL(log, 6, walAppend, 99, []byte("stale")) // an older epoch
	log = append(log, make([]byte, 4093)...)

	recs, end := parseWAL(log, 7)
	if len(recs) != 2 || end != int64(torn) || recs[0].seq != 1 || recs[1].op != walDelete {
		t.Fatalf("parseWAL = %+v, stop %d (want 2 records, stop %d)", recs, end, torn)
	}
	if n := countEpoch(log[end:], 7); n != 1 {
		t.Fatalf("countEpoch past the damage = %d, want 1 (seq 3)", n)
	}
	if top := maxWALSeq(log); top != 99 {
		t.Fatalf("maxWALSeq = %d, want 99", top)
	}
	if recs, _ := parseWAL(log, 8); len(recs) != 0 {
		t.Fatalf("records of another epoch accepted: %+v", recs)
	}
}

func FuzzScanWAL(f *testing.F) {
	f.Add(appendWAL(nil, 1, walAppend, 1, []byte("x")), uint64(1))
	f.Add(append(make([]byte, 64), appendWAL(nil, 2, walDelete, 5, nil)...), uint64(2))
	f.Add(bytes.Repeat([]byte{0, 0, 0, 17}, 20), uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, epoch uint64) {
		recs, end := parseWAL(b, epoch)
		if end < 0 || end > int64(len(b)) {
			t.Fatalf("stop offset %d out of range", end)
		}
		var sum int64
		for _, r := range recs {
			sum += r.size
		}
		if sum != end {
			t.Fatalf("record sizes add to %d, stop at %d", sum, end)
		}
		_ = countEpoch(b, epoch)
		_ = maxWALSeq(b)
	})
}
