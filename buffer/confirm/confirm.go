// Package confirm is the confirmation message a forwarder sends a device
// once Kafka holds the device's readings (delivery mode "kafka").
//
// A confirmation travels on {prefix}/{device_id}/ack, QoS 1, not retained,
// lists the confirmed seqs as sorted, inclusive ranges, and carries the
// forwarder's Ed25519 signature:
//
//	{"v":1,"forwarder_id":"fwd-a","seqs":[[48200,48213],[48215,48215]],"sig":"base64..."}
//
// The forwarder builds one with a Set per device, Sign and Append; the
// device reads it with Decode, checks it with Verify, and deletes the
// readings it covers. Decode is strict, since anybody allowed to publish on
// the topic can send anything: malformed, unsorted or overlapping ranges,
// seqs above MaxSeq and a "sig" that is not 64 bytes of base64 are rejected
// with an error that wraps ErrInvalid.
//
// # Signature
//
// The signature (buffer/sign, purpose Purpose) covers the bytes Signed
// returns: the device id, the forwarder id and the ranges. The device id is
// not in the message: the forwarder takes it from the topic the readings
// came on, the device uses its own, so a confirmation moved to another
// device's topic does not verify there.
//
// The message stays "v":1. Version 1 readers ignore unknown fields, so every
// agent ever shipped reads a signed confirmation and simply does not check
// "sig"; a new "v" would make those agents drop every confirmation until
// they are upgraded, and their buffers would fill. An agent that has keys
// refuses a message without "sig" (ErrUnsigned), so the version number adds
// nothing to the protection.
//
// A signature has no expiry, and needs none: a device's seqs are unique for
// its whole life, so a replayed genuine confirmation can only confirm seqs
// that a forwarder already saw in Kafka. Deleting them again deletes
// nothing, or a re-sent copy of a reading Kafka has.
package confirm

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// Version is the format version written in the "v" field.
const Version = 1

// MaxPayload is the largest confirmation Decode accepts, in bytes.
const MaxPayload = 64 << 10

// MaxSeq is the largest seq a reading can carry: 2^53, the largest integer
// every JSON consumer reads exactly.
const MaxSeq = 1 << 53

// Purpose is the purpose string (buffer/sign) every confirmation signature
// covers: signature scheme 2 of confirmations, scheme 1 being none.
const Purpose = "sensorpipe confirm v2"

// Sentinel errors; callers branch on them with errors.Is.
var (
	// ErrInvalid is wrapped by every error Decode returns.
	ErrInvalid = errors.New("invalid confirmation")
	// ErrUnsigned is returned by Verify for a message without a signature.
	ErrUnsigned = errors.New("confirmation is not signed")
)

// Topic is the topic a device's confirmations are published on.
func Topic(prefix, deviceID string) string {
	return prefix + "/" + deviceID + "/ack"
}

// Range is an inclusive range of seqs.
type Range struct{ First, Last uint64 }

// Contains reports whether seq is in r.
func (r Range) Contains(seq uint64) bool { return r.First <= seq && seq <= r.Last }

// Len is the number of seqs in r.
func (r Range) Len() uint64 { return r.Last - r.First + 1 }

// Message is one confirmation. Seqs are sorted, disjoint and not adjacent
// (adjacent ranges are written as one).
type Message struct {
	ForwarderID string
	Seqs        []Range
	Sig         []byte // Ed25519 signature over Signed; nil: unsigned
}

// Signed returns the bytes a confirmation's signature covers, for the device
// deviceID: a JSON object of the device id, the forwarder id and the ranges,
// {"device_id":"pi-1","forwarder_id":"fwd-a","seqs":[[1,5]]}, which only
// this package writes, so both sides build the same bytes from the fields.
func Signed(deviceID string, m *Message) []byte {
	b := append(make([]byte, 0, 64+len(m.Seqs)*24), `{"device_id":`...)
	b = appendString(b, deviceID)
	b = append(b, `,"forwarder_id":`...)
	b = appendString(b, m.ForwarderID)
	b = append(b, `,"seqs":`...)
	return append(appendRanges(b, m.Seqs), '}')
}

// Sign signs m for the device deviceID, setting m.Sig.
func Sign(s *sign.Signer, deviceID string, m *Message) {
	m.Sig = s.Sign(Purpose, Signed(deviceID, m))
}

// Verify checks that m was signed for the device deviceID by a key of keys.
// It returns ErrUnsigned for a message without a signature, and an error
// wrapping sign.ErrBadSignature for one no key verifies.
func Verify(keys *sign.Verifier, deviceID string, m *Message) error {
	if m.Sig == nil {
		return ErrUnsigned
	}
	if err := keys.Verify(Purpose, Signed(deviceID, m), m.Sig); err != nil {
		return fmt.Errorf("confirmation for %s from forwarder %q: %w", deviceID, m.ForwarderID, err)
	}
	return nil
}

// Count is the number of seqs m confirms.
func (m *Message) Count() uint64 {
	var n uint64
	for _, r := range m.Seqs {
		n += r.Len()
	}
	return n
}

// Append appends the wire form of m to dst, with "sig" when m is signed.
// m.Seqs should come from Set.Ranges, so that the message is sorted and
// coalesced.
func Append(dst []byte, m *Message) []byte {
	dst = append(dst, `{"v":1,"forwarder_id":`...)
	dst = appendString(dst, m.ForwarderID)
	dst = append(dst, `,"seqs":`...)
	dst = appendRanges(dst, m.Seqs)
	if m.Sig != nil {
		dst = append(dst, `,"sig":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, m.Sig)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

func appendString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

func appendRanges(dst []byte, rs []Range) []byte {
	dst = append(dst, '[')
	for i, r := range rs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		dst = strconv.AppendUint(dst, r.First, 10)
		dst = append(dst, ',')
		dst = strconv.AppendUint(dst, r.Last, 10)
		dst = append(dst, ']')
	}
	return append(dst, ']')
}

type wire struct {
	V           *int       `json:"v"`
	ForwarderID string     `json:"forwarder_id"`
	Seqs        [][]uint64 `json:"seqs"`
	Sig         *string    `json:"sig"`
}

// Decode parses a confirmation. Unknown fields are ignored, so a newer
// forwarder may add some; everything the device acts on is checked.
func Decode(b []byte) (Message, error) {
	if len(b) > MaxPayload {
		return Message{}, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(b), MaxPayload)
	}
	var w wire
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&w); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if d.More() {
		return Message{}, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	switch {
	case w.V == nil:
		return Message{}, fmt.Errorf("%w: no \"v\"", ErrInvalid)
	case *w.V != Version:
		return Message{}, fmt.Errorf("%w: version %d, want %d", ErrInvalid, *w.V, Version)
	case len(w.Seqs) == 0:
		return Message{}, fmt.Errorf("%w: no seqs", ErrInvalid)
	}
	m := Message{ForwarderID: w.ForwarderID, Seqs: make([]Range, len(w.Seqs))}
	for i, p := range w.Seqs {
		if len(p) != 2 {
			return Message{}, fmt.Errorf("%w: range %d has %d numbers, want 2", ErrInvalid, i, len(p))
		}
		r := Range{First: p[0], Last: p[1]}
		switch {
		case r.First == 0 || r.First > r.Last:
			return Message{}, fmt.Errorf("%w: range [%d,%d]", ErrInvalid, r.First, r.Last)
		case r.Last > MaxSeq:
			return Message{}, fmt.Errorf("%w: seq %d above 2^53", ErrInvalid, r.Last)
		case i > 0 && r.First <= m.Seqs[i-1].Last:
			return Message{}, fmt.Errorf("%w: range [%d,%d] is not after [%d,%d]", ErrInvalid, r.First, r.Last, m.Seqs[i-1].First, m.Seqs[i-1].Last)
		}
		m.Seqs[i] = r
	}
	if w.Sig != nil {
		sig, err := base64.StdEncoding.Strict().DecodeString(*w.Sig)
		if err != nil || len(sig) != 64 {
			return Message{}, fmt.Errorf("%w: \"sig\" is not 64 bytes of base64", ErrInvalid)
		}
		m.Sig = sig
	}
	return m, nil
}

// Set collects seqs and hands them out as coalesced ranges. Seqs that arrive
// in increasing order, as one device's readings do, cost no memory beyond
// their range. The zero value is an empty set; a Set is not safe for
// concurrent use.
type Set struct {
	rs     []Range
	sorted int // rs[:sorted] is sorted, disjoint and not adjacent
}

// Add puts seq in the set.
func (s *Set) Add(seq uint64) { s.AddRange(Range{seq, seq}) }

// AddRange puts every seq of r in the set.
func (s *Set) AddRange(r Range) {
	if n := len(s.rs); n == s.sorted {
		if n == 0 || r.First > s.rs[n-1].Last+1 {
			s.rs = append(s.rs, r)
			s.sorted++
			return
		}
		if last := &s.rs[n-1]; r.First >= last.First {
			last.Last = max(last.Last, r.Last)
			return
		}
	}
	s.rs = append(s.rs, r)
	if len(s.rs)-s.sorted > 64+s.sorted {
		s.compact()
	}
}

// Len is the number of ranges the set holds once coalesced.
func (s *Set) Len() int {
	s.compact()
	return len(s.rs)
}

// Ranges returns the set as sorted, coalesced ranges, in a new slice.
func (s *Set) Ranges() []Range {
	s.compact()
	return slices.Clone(s.rs)
}

// Reset empties the set, keeping its memory.
func (s *Set) Reset() { s.rs, s.sorted = s.rs[:0], 0 }

func (s *Set) compact() {
	if s.sorted == len(s.rs) {
		return
	}
	slices.SortFunc(s.rs, func(a, b Range) int {
		switch {
		case a.First < b.First:
			return -1
		case a.First > b.First:
			return 1
		}
		return 0
	})
	out := s.rs[:1]
	for _, r := range s.rs[1:] {
		last := &out[len(out)-1]
		if r.First <= last.Last+1 {
			last.Last = max(last.Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	s.rs, s.sorted = out, len(out)
}
