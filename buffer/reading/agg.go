package reading

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Aggregate marks a record that stands for N readings of one sensor which
// a full buffer folded into one (buffer.when_full: downsample). The
// Reading carrying it has its own seq; its TS is the time of the first
// reading folded in, and its Values are the means of each field.
//
// On the wire it is the field "agg" of the reading:
//
//	"agg":{"n":60,"level":1,"to":"2026-11-25T10:15:59.000Z","covers":[48100,48340],
//	       "min":{"temperature_c":21.1},"max":{"temperature_c":21.6}}
//
// with "count":{field:n} for the fields that were not in every one of the N
// readings. Covers is the range of seqs the aggregate replaces (the
// readings of this sensor it folded, and any finer aggregates it merged):
// those seqs will never arrive, and a consumer's gap view counts them as
// accounted for, not lost. The range may hold seqs of other sensors and
// of other aggregates, which arrive on their own.
type Aggregate struct {
	N      uint64    // readings folded in, in all
	Level  int       // 1 for readings folded into aggregates, L+1 when level-L aggregates are merged
	To     time.Time // time of the last reading folded in (the first is the reading's TS)
	Covers [2]uint64 // first and last seq replaced
	Min    map[string]float64
	Max    map[string]float64
	// Count is the number of readings that had the field, for the fields
	// that were missing in some; a field not listed was in all N.
	Count map[string]uint64
}

// FieldCount is how many of the N readings had field k.
func (a *Aggregate) FieldCount(k string) uint64 {
	if n, ok := a.Count[k]; ok {
		return n
	}
	return a.N
}

// MaxLevel bounds Aggregate.Level.
const MaxLevel = 32

// appendAgg writes the "agg" field, with its leading comma.
func appendAgg(dst []byte, a *Aggregate) []byte {
	return a.AppendJSON(append(dst, `,"agg":`...))
}

// AppendJSON appends the aggregate as the JSON object of the wire
// format's "agg" field (the sink stores it as it is).
func (a *Aggregate) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"n":`...)
	dst = strconv.AppendUint(dst, a.N, 10)
	dst = append(dst, `,"level":`...)
	dst = strconv.AppendInt(dst, int64(a.Level), 10)
	dst = append(dst, `,"to":"`...)
	dst = a.To.UTC().AppendFormat(dst, tsLayout)
	dst = append(dst, `","covers":[`...)
	dst = strconv.AppendUint(dst, a.Covers[0], 10)
	dst = append(dst, ',')
	dst = strconv.AppendUint(dst, a.Covers[1], 10)
	dst = append(dst, `],"min":`...)
	dst = appendFloats(dst, a.Min)
	dst = append(dst, `,"max":`...)
	dst = appendFloats(dst, a.Max)
	if len(a.Count) > 0 {
		dst = append(dst, `,"count":{`...)
		for i, k := range sortedCountKeys(a.Count) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, k)
			dst = append(dst, ':')
			dst = strconv.AppendUint(dst, a.Count[k], 10)
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

func appendFloats(dst []byte, m map[string]float64) []byte {
	dst = append(dst, '{')
	for i, k := range sortedKeys(m) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendFloat(dst, m[k])
	}
	return append(dst, '}')
}

func sortedCountKeys(m map[string]uint64) []string {
	f := make(map[string]float64, len(m))
	for k := range m {
		f[k] = 0
	}
	return sortedKeys(f)
}

// wireAgg mirrors the "agg" object.
type wireAgg struct {
	N      *uint64           `json:"n"`
	Level  *int              `json:"level"`
	To     *string           `json:"to"`
	Covers []uint64          `json:"covers"`
	Min    map[string]value  `json:"min"`
	Max    map[string]value  `json:"max"`
	Count  map[string]uint64 `json:"count"`
}

// parseAgg decodes the raw "agg" object (encoding/json has accepted the
// whole payload, so raw is valid JSON).
func parseAgg(raw json.RawMessage) (*Aggregate, error) {
	if err := checkAggKeys(raw); err != nil {
		return nil, err
	}
	var w wireAgg
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: agg: %v", ErrInvalid, err)
	}
	switch {
	case w.N == nil:
		return nil, fmt.Errorf("%w: agg: missing n", ErrInvalid)
	case w.Level == nil:
		return nil, fmt.Errorf("%w: agg: missing level", ErrInvalid)
	case w.To == nil:
		return nil, fmt.Errorf("%w: agg: missing to", ErrInvalid)
	case len(w.Covers) != 2:
		return nil, fmt.Errorf("%w: agg: covers must be [first_seq,last_seq]", ErrInvalid)
	}
	to, err := time.Parse(time.RFC3339Nano, *w.To)
	if err != nil {
		return nil, fmt.Errorf("%w: agg: to %q is not RFC 3339", ErrInvalid, *w.To)
	}
	a := &Aggregate{N: *w.N, Level: *w.Level, To: to.UTC(), Covers: [2]uint64{w.Covers[0], w.Covers[1]},
		Min: floats(w.Min), Max: floats(w.Max), Count: w.Count}
	return a, nil
}

func floats(m map[string]value) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = float64(v)
	}
	return out
}

// checkAggKeys rejects duplicate keys in the agg object and its maps, as
// checkKeys does at the top level.
func checkAggKeys(raw []byte) error {
	p := scanner{b: raw}
	if !p.consume('{') {
		return fmt.Errorf("%w: agg is not an object", ErrInvalid)
	}
	var seen keySet
	return p.eachKey(func(key []byte) error {
		if seen.add(key) {
			return fmt.Errorf("%w: duplicate key %q in agg", ErrInvalid, key)
		}
		switch string(key) {
		case "min", "max", "count":
			if p.consume('{') {
				var in keySet
				name := string(key)
				return p.eachKey(func(k []byte) error {
					if in.add(k) {
						return fmt.Errorf("%w: duplicate key %q in agg.%s", ErrInvalid, k, name)
					}
					p.skipValue()
					return nil
				})
			}
		}
		p.skipValue()
		return nil
	})
}

// validateAgg checks an aggregate against the reading that carries it:
// a count, a level, a time range and a seq range that make sense, and for
// every field of Values (the means) a min and a max around it.
func (r *Reading) validateAgg() error {
	a := r.Agg
	switch {
	case a.N == 0:
		return fmt.Errorf("%w: agg: n must be positive", ErrInvalid)
	case a.Level < 1 || a.Level > MaxLevel:
		return fmt.Errorf("%w: agg: level %d is outside 1..%d", ErrInvalid, a.Level, MaxLevel)
	case a.To.IsZero() || a.To.Before(r.TS):
		return fmt.Errorf("%w: agg: to is before ts", ErrInvalid)
	case a.To.UTC().Year() > 9999:
		return fmt.Errorf("%w: agg: to is after 9999", ErrInvalid)
	case a.Covers[0] == 0 || a.Covers[0] > a.Covers[1] || a.Covers[1] > MaxSeq:
		return fmt.Errorf("%w: agg: covers [%d,%d] is not a range of seqs", ErrInvalid, a.Covers[0], a.Covers[1])
	case a.Covers[1] >= r.Seq && r.Seq != 0:
		return fmt.Errorf("%w: agg: covers seqs from %d up, not below its own seq %d", ErrInvalid, a.Covers[1], r.Seq)
	case len(a.Min) != len(r.Values) || len(a.Max) != len(r.Values):
		return fmt.Errorf("%w: agg: min and max must have the fields of values", ErrInvalid)
	}
	for k, mean := range r.Values {
		lo, ok1 := a.Min[k]
		hi, ok2 := a.Max[k]
		if !ok1 || !ok2 {
			return fmt.Errorf("%w: agg: field %s has no min or max", ErrInvalid, k)
		}
		if math.IsNaN(lo) || math.IsInf(lo, 0) || math.IsNaN(hi) || math.IsInf(hi, 0) {
			return fmt.Errorf("%w: agg: field %s: min or max is not finite", ErrInvalid, k)
		}
		if lo > mean || mean > hi {
			return fmt.Errorf("%w: agg: field %s: mean %v is outside min %v .. max %v", ErrInvalid, k, mean, lo, hi)
		}
	}
	for k, n := range a.Count {
		if _, ok := r.Values[k]; !ok {
			return fmt.Errorf("%w: agg: count of %s, which is not in values", ErrInvalid, k)
		}
		if n == 0 || n > a.N {
			return fmt.Errorf("%w: agg: count of %s is %d, outside 1..n", ErrInvalid, k, n)
		}
	}
	return nil
}
