package buffer

import (
	"encoding/binary"
	"fmt"
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
//	[0]     format version (valueFormat)
//	[1]     flags (flagSynced)
//	[2:10]  reading ts, Unix nanoseconds, big-endian (for max_age without a JSON decode)
//	[10]    len(sensor)
//	[11:]   sensor, then the payload
//
// Keys are the seq as 8 big-endian bytes, so bbolt's byte order is seq order.
const (
	valueFormat = 1
	flagSynced  = 1
	headerLen   = 11
	keyLen      = 8
)

// appendValue appends the stored form of r to dst.
func appendValue(dst []byte, r *reading.Reading) []byte {
	var flags byte
	if r.TimeSynced {
		flags |= flagSynced
	}
	dst = append(dst, valueFormat, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.TS.UnixNano()))
	dst = append(dst, byte(len(r.Sensor)))
	dst = append(dst, r.Sensor...)
	return reading.Encode(dst, r)
}

// header is the decoded fixed part of a stored value.
type header struct {
	synced  bool
	ts      time.Time
	sensor  []byte // aliases the value
	payload []byte // aliases the value
}

func parseValue(v []byte) (header, error) {
	if len(v) < headerLen {
		return header{}, fmt.Errorf("%w: value of %d bytes is shorter than its header", ErrCorrupt, len(v))
	}
	if v[0] != valueFormat {
		return header{}, fmt.Errorf("%w: unknown value format %d", ErrCorrupt, v[0])
	}
	n := int(v[10])
	if len(v) < headerLen+n {
		return header{}, fmt.Errorf("%w: value of %d bytes is shorter than its sensor name", ErrCorrupt, len(v))
	}
	return header{
		synced:  v[1]&flagSynced != 0,
		ts:      time.Unix(0, int64(binary.BigEndian.Uint64(v[2:10]))).UTC(),
		sensor:  v[headerLen : headerLen+n],
		payload: v[headerLen+n:],
	}, nil
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
	c.Seq = 1 // assigned later; Validate wants it positive
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidReading, err)
	}
	if err := reading.CheckName(r.Sensor); err != nil {
		return fmt.Errorf("%w: sensor: %w", ErrInvalidReading, err)
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
