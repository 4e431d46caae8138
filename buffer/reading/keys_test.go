package reading

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// refCheckKeys is checkKeys written with encoding/json's tokenizer: slower
// (it allocates for every token), but obviously right.
func refCheckKeys(b []byte) bool {
	d := json.NewDecoder(bytes.NewReader(b))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return true
	}
	seen := map[string]bool{}
	for d.More() {
		t, _ := d.Token()
		key := t.(string)
		if seen[key] {
			return false
		}
		seen[key] = true
		for _, k := range knownKeys {
			if key != k && strings.EqualFold(key, k) {
				return false
			}
		}
		var raw json.RawMessage
		_ = d.Decode(&raw)
		if key != "values" {
			continue
		}
		vd := json.NewDecoder(bytes.NewReader(raw))
		if t, err := vd.Token(); err != nil || t != json.Delim('{') {
			continue
		}
		inValues := map[string]bool{}
		for vd.More() {
			t, _ := vd.Token()
			if inValues[t.(string)] {
				return false
			}
			inValues[t.(string)] = true
			var skip json.RawMessage
			_ = vd.Decode(&skip)
		}
	}
	return true
}

// FuzzCheckKeysAgrees holds the hand-written key scan to the tokenizer on
// every valid JSON value.
func FuzzCheckKeysAgrees(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"values":{"t":1,"t":2}}`, `{"values":{"t":1,"\u0074":2}}`, `{"SEQ":1}`,
		`{"x":{"a":[1,"}",{"b":"\"]"}],"c":null},"y":[],"x":2}`, `{"values":null,"values":{}}`,
		`{"values":[{"a":1,"a":1}]}`, `null`, `[1,{"a":1,"a":1}]`, `{ "v" : 1 , "v" : 1 }`, `{}`,
		`{"values":{"a":{"b":1,"b":2},"c":"x\\"}}`, `{"ſeq":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		if got, want := checkKeys(b) == nil, refCheckKeys(b); got != want {
			t.Fatalf("checkKeys accepts: %v, the tokenizer: %v: %q", got, want, b)
		}
	})
}
