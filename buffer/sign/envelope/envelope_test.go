package envelope_test

import (
	"errors"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/buffer/sign/envelope"
)

func TestSealOpen(t *testing.T) {
	k, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	p, err := envelope.Seal("thing", []byte(`{"a":1}`), "sensorpipe test v1", k)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"v":1,"thing":{"a":1},"sig":"`; string(p[:len(want)]) != want {
		t.Fatalf("envelope %s", p)
	}
	raw, err := envelope.Open(p, "thing", "sensorpipe test v1", k.Verifier())
	if err != nil || string(raw) != `{"a":1}` {
		t.Fatalf("open: %s, %v", raw, err)
	}
	refused := []struct {
		name          string
		part, purpose string
		v             envelope.Verifier
		want          error
	}{
		{"other purpose", "thing", "sensorpipe other v1", k.Verifier(), envelope.ErrSignature},
		{"other part", "other", "sensorpipe test v1", k.Verifier(), envelope.ErrMalformed},
		{"no keys", "thing", "sensorpipe test v1", nil, envelope.ErrSignature},
	}
	for _, tt := range refused {
		if _, err := envelope.Open(p, tt.part, tt.purpose, tt.v); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	for _, bad := range []string{`{"a": 1}`, `{"a":1`, ``} {
		if _, err := envelope.Seal("thing", []byte(bad), "sensorpipe test v1", k); err == nil {
			t.Errorf("Seal(%q) accepted a part that is not compact JSON", bad)
		}
	}
	if err := envelope.DecodeStrict([]byte(`{"a":1,"b":2}`), &struct{ A int }{}); err == nil {
		t.Error("DecodeStrict accepted an unknown field")
	}
}
