package tail

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// What tail prints comes from devices, and a terminal obeys escape
// sequences (ESC, the 8-bit C1 controls, OSC titles, bidi overrides that
// reorder what is shown). Decode already refuses control characters in the
// names it reads, but unknown fields, error messages and other printable-
// looking runes still reach the output; everything is written so that only
// printable runes reach the terminal as themselves.

// AppendText appends s with every rune strconv.IsPrint refuses (controls,
// format characters such as U+202E, invalid UTF-8, and any space but ' ')
// written as a \x, \u or \U escape, and a backslash as "\\".
func AppendText(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\x`...)
			dst = append(dst, hexDigits[s[i]>>4], hexDigits[s[i]&0xf])
		case r == '\\':
			dst = append(dst, `\\`...)
		case strconv.IsPrint(r):
			dst = append(dst, s[i:i+size]...)
		default:
			q := strconv.QuoteRuneToASCII(r) // '\u202e'
			dst = append(dst, q[1:len(q)-1]...)
		}
		i += size
	}
	return dst
}

// Text is AppendText as a string.
func Text(s string) string { return string(AppendText(nil, s)) }

const hexDigits = "0123456789abcdef"

// JSON appends v, a JSON text, on one line with every rune that is not
// printable ASCII or printable Unicode written as a JSON \u escape (inside
// strings, where alone such runes can be): the same JSON value, safe to
// print. A v that is not valid JSON is appended as AppendText would.
func JSON(dst []byte, v []byte) []byte {
	var c bytes.Buffer
	if err := json.Compact(&c, v); err != nil {
		return AppendText(dst, string(v))
	}
	b := c.Bytes()
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError && (r >= 0x20 && r < 0x7f || r >= 0x80 && strconv.IsPrint(r)) {
			dst = append(dst, b[i:i+size]...)
			i += size
			continue
		}
		// Invalid UTF-8 cannot be in a value Decode accepted; escape it as
		// U+FFFD, as a JSON decoder would read it.
		for _, u := range utf16(r) {
			dst = append(dst, `\u`...)
			dst = append(dst, hexDigits[u>>12], hexDigits[u>>8&0xf], hexDigits[u>>4&0xf], hexDigits[u&0xf])
		}
		i += size
	}
	return dst
}

// utf16 returns r as one or two UTF-16 code units (a surrogate pair).
func utf16(r rune) []uint16 {
	if r < 0x10000 {
		return []uint16{uint16(r)}
	}
	r -= 0x10000
	return []uint16{0xd800 + uint16(r>>10), 0xdc00 + uint16(r&0x3ff)}
}
