package reading

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// knownKeys are the top-level keys Decode reads.
var knownKeys = [...]string{"v", "device_id", "seq", "sensor", "kind", "ts", "time_synced", "values", "agg"}

// checkKeys rejects, in a payload encoding/json has accepted (so b is one
// valid JSON value), duplicate keys at the top level and in values, and
// top-level keys that differ from a known one only in case: encoding/json
// lets the last copy win and matches keys case-insensitively, while the raw
// bytes travel on to consumers that may do neither.
func checkKeys(b []byte) error {
	p := scanner{b: b}
	if !p.consume('{') {
		return nil // null: encoding/json accepted it, the field checks reject it
	}
	var seen keySet
	return p.eachKey(func(key []byte) error {
		if seen.add(key) {
			return fmt.Errorf("%w: duplicate key %q", ErrInvalid, key)
		}
		for _, k := range knownKeys {
			if string(key) != k && bytes.EqualFold(key, []byte(k)) {
				return fmt.Errorf("%w: key %q differs from %q only in case", ErrInvalid, key, k)
			}
		}
		if string(key) == "values" && p.consume('{') {
			var inValues keySet
			return p.eachKey(func(key []byte) error {
				if inValues.add(key) {
					return fmt.Errorf("%w: duplicate key %q in values", ErrInvalid, key)
				}
				p.skipValue()
				return nil
			})
		}
		p.skipValue()
		return nil
	})
}

// eachKey calls fn with each key of the object whose '{' was consumed; fn
// reads or skips the value. It consumes the closing '}'.
func (p *scanner) eachKey(fn func(key []byte) error) error {
	if p.consume('}') {
		return nil
	}
	for {
		key := p.key()
		p.consume(':')
		if err := fn(key); err != nil {
			return err
		}
		if !p.consume(',') {
			p.consume('}')
			return nil
		}
	}
}

// key reads a string of valid JSON: its bytes in the input, or a copy
// unescaped when it has escapes.
func (p *scanner) key() []byte {
	p.skipSpace()
	start := p.i
	p.skipString()
	raw := p.b[start:p.i]
	if len(raw) >= 2 && bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1]
	}
	var s string
	_ = json.Unmarshal(raw, &s) // valid JSON: cannot fail
	return []byte(s)
}

// skipString moves past the string starting at p.i.
func (p *scanner) skipString() {
	p.i++ // '"'
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '\\':
			p.i += 2
			continue
		case '"':
			p.i++
			return
		}
		p.i++
	}
}

// skipValue moves past one value of valid JSON.
func (p *scanner) skipValue() {
	p.skipSpace()
	depth := 0
	for p.i < len(p.b) {
		switch c := p.b[p.i]; c {
		case '"':
			p.skipString()
			if depth == 0 {
				return
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return // the end of the enclosing object: the value was a scalar
			}
			depth--
			if depth == 0 {
				p.i++
				return
			}
		case ',':
			if depth == 0 {
				return
			}
		}
		p.i++
	}
}

// keySet is a set of keys that allocates nothing for the few keys a
// reading has and stays linear for a payload made of thousands.
type keySet struct {
	few  [12][]byte
	n    int
	many map[string]bool
}

// add adds key (which must stay unchanged) and reports whether it was
// there already.
func (s *keySet) add(key []byte) bool {
	if s.many != nil {
		if s.many[string(key)] {
			return true
		}
		s.many[string(key)] = true
		return false
	}
	for _, k := range s.few[:s.n] {
		if bytes.Equal(k, key) {
			return true
		}
	}
	if s.n < len(s.few) {
		s.few[s.n] = key
		s.n++
		return false
	}
	s.many = make(map[string]bool, 2*len(s.few))
	for _, k := range s.few {
		s.many[string(k)] = true
	}
	s.many[string(key)] = true
	return false
}
