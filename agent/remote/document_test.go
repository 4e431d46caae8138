package remote_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgepipe/sensorpipe/agent/remote"
)

// purposeSigner signs with k under another purpose (a confirmation's).
type purposeSigner struct {
	k       *key
	purpose string
}

func (p purposeSigner) Sign(_ string, msg []byte) []byte { return p.k.Sign(p.purpose, msg) }

func TestOpenConfigRefuses(t *testing.T) {
	fleet, other := newKey(t), newKey(t)
	good := doc(t, fleet, remote.LevelFleet, "", 1, map[string]any{"log_level": "debug"})
	var env map[string]json.RawMessage
	if err := json.Unmarshal(good, &env); err != nil {
		t.Fatal(err)
	}
	with := func(k string, v string) []byte {
		e := map[string]json.RawMessage{}
		for kk, vv := range env {
			e[kk] = vv
		}
		if v == "" {
			delete(e, k)
		} else {
			e[k] = json.RawMessage(v)
		}
		b, _ := json.Marshal(e)
		return b
	}
	sigOf := func(b []byte) string {
		var e struct{ Sig string }
		_ = json.Unmarshal(b, &e)
		return `"` + e.Sig + `"`
	}
	tests := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"unsigned", with("sig", ""), remote.ErrSignature},
		{"empty signature", with("sig", `""`), remote.ErrSignature},
		{"wrong key", doc(t, other, remote.LevelFleet, "", 1, map[string]any{"log_level": "debug"}), remote.ErrSignature},
		{"confirmation purpose", doc(t, purposeSigner{fleet, "sensorpipe confirm v2"}, remote.LevelFleet, "", 1, map[string]any{"log_level": "debug"}), remote.ErrSignature},
		{"command purpose", doc(t, purposeSigner{fleet, remote.CommandPurpose}, remote.LevelFleet, "", 1, map[string]any{"log_level": "debug"}), remote.ErrSignature},
		{"tampered document", with("doc", `{"level":"fleet","version":1,"issued":"2026-01-01T00:00:00Z","config":{"log_level":"error"}}`), remote.ErrSignature},
		{"signature of another document", with("sig", sigOf(doc(t, fleet, remote.LevelFleet, "", 2, nil))), remote.ErrSignature},
		{"not base64", with("sig", `"***"`), remote.ErrSignature},
		{"wire version", with("v", `2`), remote.ErrMalformed},
		{"not json", []byte("online"), remote.ErrMalformed},
		{"no document", with("doc", ""), remote.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := remote.OpenConfig(tt.payload, fleet.Verifier())
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	d, err := remote.OpenConfig(good, fleet.Verifier())
	if err != nil || d.Version != 1 || d.Config["log_level"] != "debug" {
		t.Fatalf("good document: %+v, %v", d, err)
	}
	if _, err := remote.OpenConfig(good, nil); !errors.Is(err, remote.ErrSignature) {
		t.Fatalf("no keys: err = %v", err)
	}
}

func TestSignedBytesAreTheDocument(t *testing.T) {
	k := newKey(t)
	p := doc(t, k, remote.LevelDevice, "pi-1", 3, map[string]any{"sensor_interval": "5s"})
	var e struct {
		V   int
		Doc json.RawMessage
		Sig string
	}
	if err := json.Unmarshal(p, &e); err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.StdEncoding.DecodeString(e.Sig)
	if err := k.Verifier().Verify(remote.ConfigPurpose, e.Doc, sig); err != nil || e.V != 1 {
		t.Fatalf("the signature does not cover the doc bytes under %q: %v", remote.ConfigPurpose, err)
	}
}

func TestTopics(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{remote.ConfigTopic("sensors", remote.LevelFleet, ""), "sensors/$fleet/config"},
		{remote.ConfigTopic("sensors", remote.LevelGroup, "greenhouses"), "sensors/$group/greenhouses/config"},
		{remote.ConfigTopic("sensors", remote.LevelDevice, "pi-1"), "sensors/pi-1/config"},
		{remote.CommandTopic("sensors", "pi-1"), "sensors/pi-1/cmd"},
		{remote.ResultTopic("sensors", "pi-1"), "sensors/pi-1/result"},
	} {
		if tt.got != tt.want {
			t.Errorf("topic %q, want %q", tt.got, tt.want)
		}
	}
}
