package reading

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Version is the wire format version written in the "v" field.
const Version = 1

// MaxPayload is the largest encoded reading Decode accepts, in bytes.
const MaxPayload = 64 << 10

// MaxSeq is the largest seq: 2^53, below which every integer is exact in
// the double-precision numbers many JSON consumers parse numbers into.
const MaxSeq = 1 << 53

// MaxNameLen bounds device ids, sensor names, kinds and value keys, in bytes.
const MaxNameLen = 128

// The timestamps Decode accepts: from 2000 (no reading of ours is older;
// a Pi at 1970 has not synced) to the end of year 9999 (RFC 3339's four
// digits). How far ahead of the receiver's clock a ts may be is the
// receiver's call (the forwarder's FORWARDER_MAX_CLOCK_SKEW).
var (
	minWireTS = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxWireTS = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Value keys of the quantities our drivers measure. Other keys are allowed
// and carried through unchanged.
const (
	Temperature = "temperature_c"
	Humidity    = "humidity_pct"
	Pressure    = "pressure_hpa"
	CO2         = "co2_ppm"
	Illuminance = "illuminance_lux"
	Voltage     = "voltage_v"
	Current     = "current_a"
	Power       = "power_w"
)

// ErrInvalid is wrapped by every error Decode returns, so callers can route
// bad payloads (to a dead-letter topic, say) with errors.Is.
var ErrInvalid = errors.New("invalid reading")

// Reading is one measurement of one sensor.
type Reading struct {
	DeviceID string // device that took the reading; an MQTT topic level
	Seq      uint64 // unique and increasing per device, assigned by the buffer
	Sensor   string // configured sensor name; an MQTT topic level
	Kind     string // driver kind: bme280, bmp280, dht22, ds18b20, sim...
	// TS is when the reading was taken, in UTC, with millisecond precision on the wire.
	TS time.Time
	// TimeSynced is false when TS came from a clock not yet set by NTP.
	TimeSynced bool
	// Values maps value keys (Temperature, Humidity, ...) to finite numbers.
	Values map[string]float64
	// Boot is not part of the wire format: the agent sets it on readings
	// taken while the clock is not synced, and its buffer keeps it, so that
	// TS can be corrected once the clock syncs.
	Boot BootStamp
	// Agg is set on a record that a full buffer folded from several
	// readings (see Aggregate): Values then hold the means, TS the first
	// reading's time. nil for a plain reading.
	Agg *Aggregate
}

// BootStamp places a reading on the clock of the boot it was taken in, a
// clock that runs from boot whatever the wall clock does: ID is the
// kernel's boot id (/proc/sys/kernel/random/boot_id) and Since the time
// since that boot (CLOCK_BOOTTIME). The zero value means none.
type BootStamp struct {
	ID    [16]byte
	Since time.Duration
}

// IsZero reports whether b is no stamp.
func (b BootStamp) IsZero() bool { return b.ID == [16]byte{} }

// tsLayout is RFC 3339 in UTC with exactly three fractional digits.
const tsLayout = "2006-01-02T15:04:05.000Z"

// Encode appends the wire form of r to dst and returns the extended slice.
// Value keys are written in sorted order so equal readings encode equally.
func Encode(dst []byte, r *Reading) []byte {
	dst = append(dst, `{"v":1,"device_id":`...)
	dst = appendString(dst, r.DeviceID)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, `,"sensor":`...)
	dst = appendString(dst, r.Sensor)
	dst = append(dst, `,"kind":`...)
	dst = appendString(dst, r.Kind)
	dst = append(dst, `,"ts":"`...)
	dst = r.TS.UTC().AppendFormat(dst, tsLayout)
	dst = append(dst, `","time_synced":`...)
	dst = strconv.AppendBool(dst, r.TimeSynced)
	dst = append(dst, `,"values":{`...)
	for i, k := range sortedKeys(r.Values) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendFloat(dst, r.Values[k])
	}
	dst = append(dst, '}')
	if r.Agg != nil {
		dst = appendAgg(dst, r.Agg)
	}
	return append(dst, '}')
}

// MarshalJSON implements json.Marshaler with Encode.
func (r Reading) MarshalJSON() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return Encode(nil, &r), nil
}

// UnmarshalJSON implements json.Unmarshaler with Decode's checks.
func (r *Reading) UnmarshalJSON(b []byte) error {
	d, err := Decode(b)
	if err != nil {
		return err
	}
	*r = d
	return nil
}

func sortedKeys(m map[string]float64) []string {
	if len(m) <= 4 { // the common case: avoid sort's overhead
		var arr [4]string
		keys := arr[:0]
		for k := range m {
			i := len(keys)
			keys = append(keys, k)
			for ; i > 0 && keys[i-1] > k; i-- {
				keys[i] = keys[i-1]
			}
			keys[i] = k
		}
		return keys
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// appendFloat formats like encoding/json: shortest representation, exponent
// only for very large or very small magnitudes.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...) // unreachable for validated readings
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(dst, f, format, -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, "\ufffd"...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// wire mirrors the JSON object; pointers tell a missing field from a zero one.
type wire struct {
	V          *int             `json:"v"`
	DeviceID   *string          `json:"device_id"`
	Seq        *uint64          `json:"seq"`
	Sensor     string           `json:"sensor"`
	Kind       string           `json:"kind"`
	TS         *string          `json:"ts"`
	TimeSynced *bool            `json:"time_synced"`
	Values     map[string]value `json:"values"`
	Agg        json.RawMessage  `json:"agg"`
}

// value rejects JSON null, which encoding/json would silently turn into 0.
type value float64

func (v *value) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return errors.New("null value")
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("value %s is not a finite number", b)
	}
	*v = value(f)
	return nil
}

// Decode parses and validates one wire-format reading. Unknown top-level
// fields are ignored; unknown value keys are kept. Beyond Validate, it
// rejects duplicate keys (at the top level and in values: the raw bytes
// travel on, and consumers disagree on which copy wins), top-level keys that
// differ from a known one only in case (encoding/json would take them for
// it), and a ts before 2000 or after 9999. Every error wraps ErrInvalid.
//
// Payloads in the shape Encode writes take a hand-written fast path; anything
// else (escapes, unknown fields, nulls, odd numbers) goes through
// encoding/json, and both paths end in the same checks, so they accept and
// reject the same inputs (FuzzFastPathAgrees holds them to that).
func Decode(b []byte) (Reading, error) {
	r, err := Parse(b)
	if err != nil {
		return r, err
	}
	if r.TS.Before(minWireTS) || !r.TS.Before(maxWireTS) {
		return Reading{}, fmt.Errorf("%w: ts %s is outside 2000-01-01..9999-12-31", ErrInvalid, r.TS.Format(tsLayout))
	}
	return r, nil
}

// Parse is Decode without the bounds on ts that only the wire has: it
// accepts what Validate accepts, so the agent's buffer can check the
// readings it keeps, also those stamped at 1970 by a clock that has not
// synced yet (they are corrected before they leave, or refused by the
// forwarder if they never are). Errors wrap ErrInvalid.
func Parse(b []byte) (Reading, error) {
	if len(b) > MaxPayload {
		return Reading{}, fmt.Errorf("%w: payload is %d bytes, limit %d", ErrInvalid, len(b), MaxPayload)
	}
	if !utf8.Valid(b) {
		return Reading{}, fmt.Errorf("%w: payload is not valid UTF-8", ErrInvalid)
	}
	var f fields
	if !parseFast(b, &f) {
		f = fields{}
		if err := parseSlow(b, &f); err != nil {
			return Reading{}, err
		}
	}
	return f.reading()
}

// fields is a parsed payload before validation; has* tell a missing field
// from a zero one.
type fields struct {
	hasV, hasDeviceID, hasSeq, hasTS, hasSynced bool

	v                      int
	deviceID, sensor, kind string
	seq                    uint64
	ts                     string
	synced                 bool
	values                 map[string]float64
	agg                    *Aggregate
}

func parseSlow(b []byte, f *fields) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := checkKeys(b); err != nil {
		return err
	}
	if w.V != nil {
		f.hasV, f.v = true, *w.V
	}
	if w.DeviceID != nil {
		f.hasDeviceID, f.deviceID = true, *w.DeviceID
	}
	if w.Seq != nil {
		f.hasSeq, f.seq = true, *w.Seq
	}
	if w.TS != nil {
		f.hasTS, f.ts = true, *w.TS
	}
	if w.TimeSynced != nil {
		f.hasSynced, f.synced = true, *w.TimeSynced
	}
	f.sensor, f.kind = w.Sensor, w.Kind
	f.values = make(map[string]float64, len(w.Values))
	for k, v := range w.Values {
		f.values[k] = float64(v)
	}
	if w.Agg != nil {
		a, err := parseAgg(w.Agg)
		if err != nil {
			return err
		}
		f.agg = a
	}
	return nil
}

func (f *fields) reading() (Reading, error) {
	switch {
	case !f.hasV:
		return Reading{}, fmt.Errorf("%w: missing v", ErrInvalid)
	case f.v != Version:
		return Reading{}, fmt.Errorf("%w: unsupported version v=%d", ErrInvalid, f.v)
	case !f.hasDeviceID:
		return Reading{}, fmt.Errorf("%w: missing device_id", ErrInvalid)
	case !f.hasSeq:
		return Reading{}, fmt.Errorf("%w: missing seq", ErrInvalid)
	case !f.hasTS:
		return Reading{}, fmt.Errorf("%w: missing ts", ErrInvalid)
	}
	ts, err := time.Parse(time.RFC3339Nano, f.ts)
	if err != nil {
		return Reading{}, fmt.Errorf("%w: ts %q is not RFC 3339", ErrInvalid, f.ts)
	}
	r := Reading{
		DeviceID:   f.deviceID,
		Seq:        f.seq,
		Sensor:     f.sensor,
		Kind:       f.kind,
		TS:         ts.UTC(),
		TimeSynced: !f.hasSynced || f.synced,
		Values:     f.values,
		Agg:        f.agg,
	}
	if r.Values == nil {
		r.Values = map[string]float64{}
	}
	if err := r.Validate(); err != nil {
		return Reading{}, err
	}
	return r, nil
}

// Validate checks the invariants of a reading that Encode can write and
// the buffer can keep: names usable as topic levels (device_id, sensor) or
// as plain text (kind, value keys: non-empty, at most MaxNameLen bytes, no
// control characters), a seq in 1..MaxSeq, a ts Encode can write (years
// 1..9999), and finite values. Decode also bounds ts to 2000..9999.
// Errors wrap ErrInvalid.
func (r *Reading) Validate() error {
	if err := CheckName(r.DeviceID); err != nil {
		return fmt.Errorf("%w: device_id: %v", ErrInvalid, err)
	}
	if r.Seq == 0 {
		return fmt.Errorf("%w: seq must be positive", ErrInvalid)
	}
	if r.Seq > MaxSeq {
		return fmt.Errorf("%w: seq %d is above 2^53", ErrInvalid, r.Seq)
	}
	if err := CheckName(r.Sensor); err != nil {
		return fmt.Errorf("%w: sensor: %v", ErrInvalid, err)
	}
	if err := checkText(r.Kind); err != nil {
		return fmt.Errorf("%w: kind: %v", ErrInvalid, err)
	}
	if r.TS.IsZero() {
		return fmt.Errorf("%w: missing ts", ErrInvalid)
	}
	if y := r.TS.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%w: ts year %d is outside 0001..9999 in UTC", ErrInvalid, y)
	}
	if len(r.Values) == 0 {
		return fmt.Errorf("%w: no values", ErrInvalid)
	}
	for k, v := range r.Values {
		if err := checkText(k); err != nil {
			return fmt.Errorf("%w: value key: %v", ErrInvalid, err)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: value %s is not finite", ErrInvalid, k)
		}
	}
	if r.Agg != nil {
		return r.validateAgg()
	}
	return nil
}

// ErrBadName is wrapped by CheckName's errors.
var ErrBadName = errors.New("not usable as an MQTT topic level")

// CheckName reports whether s can be one MQTT topic level: non-empty, at most
// MaxNameLen bytes of valid UTF-8, without '+', '#', '/', '$', control
// characters or U+FFFD.
func CheckName(s string) error {
	if err := checkText(s); err != nil {
		return fmt.Errorf("%w: %w", ErrBadName, err)
	}
	if i := strings.IndexAny(s, "+#/$"); i >= 0 {
		return fmt.Errorf("%w: %q contains %q", ErrBadName, s, s[i])
	}
	return nil
}

// checkText reports whether s is a usable name: non-empty, at most
// MaxNameLen bytes of valid UTF-8, without control characters (C0, DEL, C1:
// what terminals take for escape sequences) or U+FFFD (what a decoder makes
// of invalid text).
func checkText(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("longer than %d bytes", MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("%q contains a control character", s)
		}
		if s[i] >= utf8.RuneSelf {
			return checkUnicode(s)
		}
	}
	return nil
}

func checkUnicode(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for _, c := range s {
		switch {
		case c < 0x20 || (c >= 0x7f && c < 0xa0):
			return fmt.Errorf("%q contains a control character", s)
		case c == utf8.RuneError:
			return fmt.Errorf("%q contains U+FFFD", s)
		}
	}
	return nil
}
