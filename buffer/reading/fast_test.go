package reading

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzFastPathAgrees holds the hand-written parser to encoding/json: whatever
// parseFast accepts, parseSlow must accept too, with the same result.
func FuzzFastPathAgrees(f *testing.F) {
	r := sample()
	f.Add(Encode(nil, &r))
	for _, s := range []string{
		`{"v":1,"device_id":"d","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":-0.5e+3,"u":0}}`,
		` { "v" : 1 , "seq" : 7 , "values" : { } } `,
		`{"v":1,"device_id":"d","device_id":"e","seq":1,"ts":"x","values":{"t":1}}`,
		`{"v":1,"values":{"a":1,"a":2},"time_synced":false}`,
		`{"V":1}`, `{"v":01}`, `{"v":1.0}`, `{"seq":-1}`, `{"values":{"t":1e999}}`,
	} {
		f.Add([]byte(s))
	}
	seeds, _ := filepath.Glob("testdata/fuzz/FuzzDecode/*")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !utf8.Valid(b) {
			return // Decode rejects these before either parser runs
		}
		var fast fields
		if !parseFast(b, &fast) {
			return
		}
		var slow fields
		if err := parseSlow(b, &slow); err != nil {
			t.Fatalf("fast path accepted what encoding/json rejects (%v): %q", err, b)
		}
		r1, err1 := fast.reading()
		r2, err2 := slow.reading()
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("errors differ: fast %v, slow %v: %q", err1, err2, b)
		}
		if !reflect.DeepEqual(r1, r2) {
			t.Fatalf("readings differ:\nfast %+v\nslow %+v\ninput %q", r1, r2, b)
		}
	})
}

func TestFastPathTakesEncodersOutput(t *testing.T) {
	r := sample()
	var f fields
	if !parseFast(Encode(nil, &r), &f) {
		t.Fatal("parseFast refused Encode's output: the fast path would never run")
	}
	for _, s := range []string{`{"v":1,"device_id":"a\"b"}`, `{"v":1,"extra":1}`, `{"v":null}`, `{"v":1} x`} {
		var f fields
		if parseFast([]byte(s), &f) {
			t.Errorf("parseFast accepted %q, which it should leave to encoding/json", s)
		}
	}
	if !strings.Contains(string(Encode(nil, &r)), `"time_synced":true`) {
		t.Fatal("sample encodes without time_synced")
	}
}
