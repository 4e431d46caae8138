package testkit

import (
	"bytes"
	"fmt"
	"os"
	"testing"
)

// FlipValueDigit changes one digit of the temperature in the stored
// payload of seq, in the closed buffer file at path: the kind of damage a
// bad SD card block does, which still decodes as a valid reading (only the
// record's checksum tells). It changes every copy of the record in the
// file, since stale copies may linger in pages bbolt freed.
func FlipValueDigit(tb testing.TB, path string, seq uint64) {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	key := fmt.Appendf(nil, `"seq":%d,`, seq)
	found := false
	for from := 0; ; {
		at := bytes.Index(b[from:], key)
		if at < 0 {
			break
		}
		at += from
		v := bytes.Index(b[at:], []byte(`"temperature_c":`))
		if v < 0 {
			tb.Fatalf("no temperature after seq %d", seq)
		}
		off := at + v + len(`"temperature_c":`)
		if c := b[off]; c < '0' || c > '9' {
			tb.Fatalf("byte %q at %d is not a digit", c, off)
		}
		b[off] = '0' + (b[off]-'0'+1)%10
		found, from = true, off
	}
	if !found {
		tb.Fatalf("seq %d not found in %s", seq, path)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}
