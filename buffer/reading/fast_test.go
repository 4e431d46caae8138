package reading

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
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
		// Names, duplicates, bounds (issue 11 item 10).
		`{"v":1,"device_id":"d","seq":1,"sensor":"s","kind":"k","ts":"2026-11-25T10:15:02Z","values":{"t":1,"t":2}}`,
		`{"v":1,"device_id":"d","seq":1,"sensor":"s","kind":"k","ts":"2026-11-25T10:15:02Z","values":{"t":1},"SEQ":2}`,
		`{"v":1,"device_id":"d","seq":1,"sensor":"","kind":"k","ts":"2026-11-25T10:15:02Z","values":{"t":1}}`,
		"{\"v\":1,\"device_id\":\"d\",\"seq\":1,\"sensor\":\"s\u009b2J\",\"kind\":\"k\",\"ts\":\"2026-11-25T10:15:02Z\",\"values\":{\"t\":1}}",
		"{\"v\":1,\"device_id\":\"d\x7f\",\"seq\":1,\"sensor\":\"s\",\"kind\":\"k\",\"ts\":\"2026-11-25T10:15:02Z\",\"values\":{\"t\":1}}",
		"{\"v\":1,\"device_id\":\"d\",\"seq\":1,\"sensor\":\"s\",\"kind\":\"k\ufffd\",\"ts\":\"2026-11-25T10:15:02Z\",\"values\":{\"t\":1}}",
		`{"v":1,"device_id":"d","seq":9007199254740992,"sensor":"s","kind":"k","ts":"2026-11-25T10:15:02Z","values":{"t":1}}`,
		`{"v":1,"device_id":"d","seq":9007199254740993,"sensor":"s","kind":"k","ts":"2026-11-25T10:15:02Z","values":{"t":1}}`,
		`{"v":1,"device_id":"d","seq":1,"sensor":"s","kind":"k","ts":"1999-12-31T23:59:59Z","values":{"t":1}}`,
		`{"v":1,"device_id":"d","seq":1,"sensor":"s","kind":"k","ts":"2000-01-01T00:00:00Z","values":{"t":1}}`,
		`{"v":1,"device_id":"d","seq":1,"sensor":"s","kind":"k","ts":"9999-12-31T23:59:59.999Z","values":{"t":1}}`,
		`{"v":1,"device_id":"d","seq":1,"sensor":"s","kind":"k","ts":"2026-11-25T10:15:02Z","values":{"":1}}`,
	} {
		f.Add([]byte(s))
	}
	for _, b := range corpus(f, "testdata/fuzz/FuzzDecode/*") {
		f.Add(b)
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

// corpus reads the []byte inputs of Go fuzz corpus files ("go test fuzz
// v1" followed by one []byte(...) line), so one fuzz target can seed another.
func corpus(tb testing.TB, glob string) [][]byte {
	tb.Helper()
	files, _ := filepath.Glob(glob)
	var out [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.SplitN(string(b), "\n", 3)
		if len(lines) < 2 || lines[0] != "go test fuzz v1" {
			continue
		}
		arg := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
		s, err := strconv.Unquote(arg)
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		out = append(out, []byte(s))
	}
	return out
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
