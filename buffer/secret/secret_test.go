package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/secret"
)

// TestNeverPrints: no way of printing or encoding a Secret shows its value.
func TestNeverPrints(t *testing.T) {
	s := secret.Secret("hunter2")
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "pw", s, "in", struct{ P secret.Secret }{s})
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "pw", s, "in", struct{ P secret.Secret }{s})
	j, err := json.Marshal(struct{ P secret.Secret }{s})
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q", s, s, s, s, s), logs.String(), string(j)} {
		if strings.Contains(out, "hunter2") || !strings.Contains(out, "[redacted]") {
			t.Errorf("printed %q", out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Fatalf("Reveal = %q", s.Reveal())
	}
	if secret.Secret("").String() != "" {
		t.Fatal("an empty secret should print as empty, so a dump shows it is unset")
	}
}
