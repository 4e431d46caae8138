package reading

import "strconv"

// parseFast parses payloads in the plain shape Encode writes: one object with
// the known keys once each, strings without escapes or control characters,
// numbers in JSON syntax and no nulls. It returns false for anything else,
// and Decode then uses encoding/json, so this path only has to be right
// about what it accepts, never about error messages.
func parseFast(b []byte, f *fields) bool {
	p := scanner{b: b}
	if !p.consume('{') {
		return false
	}
	if p.consume('}') {
		return p.end()
	}
	for {
		key, ok := p.str()
		if !ok || !p.consume(':') {
			return false
		}
		if !p.field(key, f) {
			return false
		}
		if p.consume(',') {
			continue
		}
		return p.consume('}') && p.end()
	}
}

type scanner struct {
	b []byte
	i int
}

func (p *scanner) skipSpace() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// consume skips white space and then c, reporting whether c was there.
func (p *scanner) consume(c byte) bool {
	p.skipSpace()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *scanner) end() bool {
	p.skipSpace()
	return p.i == len(p.b)
}

// str reads a string with no escapes and no control characters; its bytes
// are then exactly its value (Decode has already checked the UTF-8).
func (p *scanner) str() (string, bool) {
	if !p.consume('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c == '\\' || c < 0x20:
			return "", false
		}
		p.i++
	}
	return "", false
}

// number reads a token in JSON number syntax and returns its text.
func (p *scanner) number() ([]byte, bool) {
	p.skipSpace()
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case p.digits() == 0:
		return nil, false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return nil, false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return nil, false
		}
	}
	return p.b[start:p.i], true
}

func (p *scanner) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// uint reads a plain non-negative integer (what encoding/json puts in a
// uint64 or an int without complaint).
func (p *scanner) uint() (uint64, bool) {
	tok, ok := p.number()
	if !ok || tok[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(tok), 10, 64)
	return n, err == nil
}

func (p *scanner) boolean() (bool, bool) {
	p.skipSpace()
	rest := p.b[p.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		p.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

func (p *scanner) field(key string, f *fields) bool {
	var ok bool
	switch key {
	case "v":
		var v uint64
		v, ok = p.uint()
		ok = ok && !f.hasV && v <= 1<<31
		f.hasV, f.v = true, int(v)
	case "device_id":
		ok = !f.hasDeviceID
		f.hasDeviceID = true
		f.deviceID, ok = p.strIf(ok)
	case "sensor":
		ok = f.sensor == ""
		f.sensor, ok = p.strIf(ok)
		ok = ok && f.sensor != ""
	case "kind":
		ok = f.kind == ""
		f.kind, ok = p.strIf(ok)
		ok = ok && f.kind != ""
	case "ts":
		ok = !f.hasTS
		f.hasTS = true
		f.ts, ok = p.strIf(ok)
	case "seq":
		ok = !f.hasSeq
		f.hasSeq = true
		var ok2 bool
		f.seq, ok2 = p.uint()
		ok = ok && ok2
	case "time_synced":
		ok = !f.hasSynced
		f.hasSynced = true
		var ok2 bool
		f.synced, ok2 = p.boolean()
		ok = ok && ok2
	case "values":
		ok = f.values == nil && p.values(f)
	}
	return ok // unknown keys and repeated keys go to the slow path
}

func (p *scanner) strIf(ok bool) (string, bool) {
	if !ok {
		return "", false
	}
	return p.str()
}

func (p *scanner) values(f *fields) bool {
	if !p.consume('{') {
		return false
	}
	f.values = make(map[string]float64, 4)
	if p.consume('}') {
		return true
	}
	for {
		key, ok := p.str()
		if !ok || !p.consume(':') {
			return false
		}
		tok, ok := p.number()
		if !ok {
			return false
		}
		v, err := strconv.ParseFloat(string(tok), 64)
		if err != nil {
			return false
		}
		if _, dup := f.values[key]; dup {
			return false // encoding/json's path rejects it with a message
		}
		f.values[key] = v
		if p.consume(',') {
			continue
		}
		return p.consume('}')
	}
}
