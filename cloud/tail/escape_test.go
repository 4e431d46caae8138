package tail_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/tail"
)

// A payload must not reach the terminal as escape sequences: not through
// a name, an unknown field, or an error message quoting it.
func TestOutputIsEscaped(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"pi-1", "pi-1"},
		{"estufa-é", "estufa-é"},
		{"a\x1b[2Jb", `a\x1b[2Jb`},
		{"rlo\u202egnp.exe", `rlo\u202egnp.exe`},
		{"c1\u009b31m", `c1\u009b31m`},
		{"bell\a", `bell\a`},
		{"back\\slash", `back\\slash`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"tag\U000E0041", `tag\U000e0041`},
	} {
		if got := tail.Text(tc.in); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}

	r := reading.Reading{DeviceID: "pi\u202e1", Seq: 7, Sensor: "s\u200b1", Kind: "sim",
		TS: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), TimeSynced: true,
		Values: map[string]float64{"t\u2028x": 1}}
	line := string(tail.Line(nil, &r, 0, 1))
	if want := `pi\u202e1 seq=7 s\u200b1 t\u2028x=1`; !strings.Contains(line, want) {
		t.Errorf("Line = %q, want it to contain %q", line, want)
	}

	// Unknown fields may carry anything JSON allows inside a string,
	// including raw C1 controls and DEL: --json re-escapes them.
	raw := "{\"v\":1,\"note\":\"\u009b2J\x7f\u202e\U0001F600 ok\",\n \"n\": 1}"
	got := tail.JSON(nil, []byte(raw))
	for _, c := range string(got) {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) || c == 0x202e || c == '\n' {
			t.Fatalf("JSON output still holds %U: %q", c, got)
		}
	}
	var a, b any
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &b); err != nil {
		t.Fatalf("escaped JSON does not parse: %v: %s", err, got)
	}
	if !strings.Contains(string(got), "\U0001F600") || a.(map[string]any)["note"] != b.(map[string]any)["note"] {
		t.Fatalf("escaping changed the value: %s", got)
	}
}
