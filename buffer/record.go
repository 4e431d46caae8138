package buffer

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Record is one stored reading, as the publisher needs it.
type Record struct {
	Seq     uint64
	Sensor  string
	Payload []byte // reading.Encode output, ready to publish
}

// Stored values are a small header followed by the wire bytes:
//
//	[0]      format version (valueFormat, or valueFormatBoot)
//	[1]      flags (flagSynced)
//	[2:10]   reading ts, Unix nanoseconds, big-endian (for max_age without a JSON decode)
//	[10:14]  CRC-32C (Castagnoli) of every other byte of the value
//	         format valueFormatBoot only, for readings taken while the clock was not synced:
//	[14:30]  the boot id, [30:38] the time since boot in nanoseconds (reading.BootStamp)
//	[14]     (or [38]) len(sensor)
//	[15:]    (or [39:]) sensor, then the payload
//
// An aggregate (valueFormatAgg: readings folded by a full buffer, see
// downsample.go) has its level at [14] and len(sensor) at [15]; [2:10] is
// its first reading's time and it is always synced.
//
// A format byte above the highest this build knows was written by a newer
// build (and read here after a downgrade): parseValue returns
// errNewerFormat, and such records are kept as they are, never published,
// folded, dropped or moved aside, for the newer build to find again.
// Values written before the checksum (valueFormatV1) lack [10:14] and are
// still read, unchecked. Keys are the seq as 8 big-endian bytes, so bbolt's
// byte order is seq order.
const (
	valueFormat     = 2
	valueFormatBoot = 3
	valueFormatV1   = 1
	valueFormatAgg  = 4
	valueFormatMax  = valueFormatAgg // the highest this build reads
	flagSynced      = 1
	headerLen       = 15
	headerLenBoot   = headerLen + 16 + 8
	headerLenAgg    = headerLen + 1
	headerLenV1     = 11
	keyLen          = 8
)

// appendValue appends the stored form of r to dst. A boot stamp is kept
// only while the reading is not synced: it is what corrects it.
func appendValue(dst []byte, r *reading.Reading) []byte {
	var flags byte
	if r.TimeSynced {
		flags |= flagSynced
	}
	stamped := !r.TimeSynced && !r.Boot.IsZero() && r.Agg == nil
	format := byte(valueFormat)
	switch {
	case r.Agg != nil:
		format = valueFormatAgg
	case stamped:
		format = valueFormatBoot
	}
	start := len(dst)
	dst = append(dst, format, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.TS.UnixNano()))
	dst = append(dst, 0, 0, 0, 0)
	if stamped {
		dst = append(dst, r.Boot.ID[:]...)
		dst = binary.BigEndian.AppendUint64(dst, uint64(r.Boot.Since))
	}
	if r.Agg != nil {
		dst = append(dst, byte(r.Agg.Level))
	}
	dst = append(dst, byte(len(r.Sensor)))
	dst = append(dst, r.Sensor...)
	dst = reading.Encode(dst, r)
	v := dst[start:]
	binary.BigEndian.PutUint32(v[10:14], valueCRC(v))
	return dst
}

// valueCRC is the checksum of a format 2, 3 or 4 value: everything but its own field.
func valueCRC(v []byte) uint32 {
	return crc32.Update(crc32.Checksum(v[:10], castagnoli), castagnoli, v[14:])
}

// header is the decoded fixed part of a stored value.
type header struct {
	synced  bool
	ts      time.Time
	boot    reading.BootStamp
	level   int    // 0 for a reading, 1.. for an aggregate
	sensor  []byte // aliases the value
	payload []byte // aliases the value
}

// parseValue checks a stored value's header and checksum. Its errors wrap
// errDamaged: the record is damaged, not the file.
func parseValue(v []byte) (header, error) {
	if len(v) == 0 {
		return header{}, fmt.Errorf("%w: empty value", errDamaged)
	}
	var hl int
	switch v[0] {
	case valueFormat:
		hl = headerLen
	case valueFormatBoot:
		hl = headerLenBoot
	case valueFormatV1:
		hl = headerLenV1
	case valueFormatAgg:
		hl = headerLenAgg
	default:
		if v[0] > valueFormatMax {
			return header{}, fmt.Errorf("%w: value format %d", errNewerFormat, v[0])
		}
		return header{}, fmt.Errorf("%w: unknown value format %d", errDamaged, v[0])
	}
	if len(v) < hl {
		return header{}, fmt.Errorf("%w: value of %d bytes is shorter than its header", errDamaged, len(v))
	}
	n := int(v[hl-1])
	if len(v) < hl+n {
		return header{}, fmt.Errorf("%w: value of %d bytes is shorter than its sensor name", errDamaged, len(v))
	}
	if v[0] != valueFormatV1 {
		if got, want := valueCRC(v), binary.BigEndian.Uint32(v[10:14]); got != want {
			return header{}, fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", errDamaged, want, got)
		}
	}
	h := header{
		synced:  v[1]&flagSynced != 0,
		ts:      time.Unix(0, int64(binary.BigEndian.Uint64(v[2:10]))).UTC(),
		sensor:  v[hl : hl+n],
		payload: v[hl+n:],
	}
	if v[0] == valueFormatAgg {
		h.level = int(v[14])
	}
	if v[0] == valueFormatBoot {
		copy(h.boot.ID[:], v[14:30])
		h.boot.Since = time.Duration(binary.BigEndian.Uint64(v[30:38]))
	}
	return h, nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, keyLen), seq)
}

func keySeq(k []byte) (uint64, error) {
	if len(k) != keyLen {
		return 0, fmt.Errorf("%w: key of %d bytes", ErrCorrupt, len(k))
	}
	return binary.BigEndian.Uint64(k), nil
}

// checkReading rejects readings that the buffer could store but nobody could
// publish, before they enter a shared transaction.
func checkReading(r *reading.Reading) error {
	if r == nil {
		return fmt.Errorf("%w: nil reading", ErrInvalidReading)
	}
	c := *r
	c.Seq = max(1, c.Seq) // assigned later; Validate wants it positive
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidReading, err)
	}
	if y := r.TS.Year(); y < 1678 || y > 2261 { // the range of Unix nanoseconds in an int64
		return fmt.Errorf("%w: ts %v out of range", ErrInvalidReading, r.TS)
	}
	if sizeBound(r) <= reading.MaxPayload {
		return nil // the common case: no need to encode to know it fits
	}
	c.Seq = ^uint64(0) // the longest seq, so the size check holds for any seq
	if n := len(reading.Encode(nil, &c)); n > reading.MaxPayload {
		return fmt.Errorf("%w: encoded size %d exceeds %d", ErrInvalidReading, n, reading.MaxPayload)
	}
	return nil
}

// sizeBound is an upper bound of r's encoded size: every string byte may
// become a 6-byte escape, a float takes at most 24 bytes, a seq 20, a
// timestamp 24, and the fixed keys and punctuation under 128.
func sizeBound(r *reading.Reading) int {
	n := 128 + 20 + 24 + 6*(len(r.DeviceID)+len(r.Sensor)+len(r.Kind))
	for k := range r.Values {
		n += 6*len(k) + 4 + 24
	}
	return n
}
