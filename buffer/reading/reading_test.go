package reading

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func sample() Reading {
	return Reading{
		DeviceID:   "pi-greenhouse-1",
		Seq:        48213,
		Sensor:     "bme280-0x76",
		Kind:       "bme280",
		TS:         time.Date(2026, 11, 25, 10, 15, 2, 125_000_000, time.UTC),
		TimeSynced: true,
		Values:     map[string]float64{Temperature: 21.43, Humidity: 48.2, Pressure: 1008.61},
	}
}

func TestEncodeMatchesDesignExample(t *testing.T) {
	r := sample()
	got := string(Encode(nil, &r))
	want := `{"v":1,"device_id":"pi-greenhouse-1","seq":48213,"sensor":"bme280-0x76","kind":"bme280",` +
		`"ts":"2026-11-25T10:15:02.125Z","time_synced":true,` +
		`"values":{"humidity_pct":48.2,"pressure_hpa":1008.61,"temperature_c":21.43}}`
	if got != want {
		t.Fatalf("Encode:\n got %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Fatal("Encode produced invalid JSON")
	}
}

func TestRoundTrip(t *testing.T) {
	r := sample()
	r.DeviceID = `dev "quoted" \ é`
	r.Values["weird key \"é\""] = -1.5e-9
	r.Values["big"] = 3e25
	back, err := Decode(Encode(nil, &r))
	if err != nil {
		t.Fatalf("Decode(Encode(r)): %v", err)
	}
	if back.DeviceID != r.DeviceID || back.Seq != r.Seq || !back.TS.Equal(r.TS) || back.Sensor != r.Sensor ||
		back.Kind != r.Kind || back.TimeSynced != r.TimeSynced || len(back.Values) != len(r.Values) {
		t.Fatalf("round trip changed the reading:\n got %+v\nwant %+v", back, r)
	}
	for k, v := range r.Values {
		if back.Values[k] != v {
			t.Errorf("value %q: got %v, want %v", k, back.Values[k], v)
		}
	}
}

func TestEncodeTruncatesToMilliseconds(t *testing.T) {
	r := sample()
	r.TS = time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.FixedZone("x", 3600))
	if got := string(Encode(nil, &r)); !strings.Contains(got, `"ts":"2026-01-02T02:04:05.999Z"`) {
		t.Fatalf("ts not UTC milliseconds: %s", got)
	}
}

func TestDecodeKeepsUnknownValueKeysAndIgnoresUnknownFields(t *testing.T) {
	b := `{"v":1,"device_id":"d","seq":1,"sensor":"s","kind":"k","ts":"2026-11-25T10:15:02Z","values":{"co2_ppm":415},"extra":{"a":1,"a":2}}`
	r, err := Decode([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	if r.Values["co2_ppm"] != 415 {
		t.Fatalf("unknown value key dropped: %v", r.Values)
	}
	if !r.TimeSynced {
		t.Fatal("time_synced should default to true when absent")
	}
	// Nested unknown fields are skipped whole, whatever they hold.
	b = `{"x":{"a":[1,"}",{"b":"\"]"}],"c":null},"v":1,"y":[[],{}],"device_id":"d","seq":1,"sensor":"s","kind":"k",` +
		`"ts":"2026-11-25T10:15:02Z","values":{"co2_ppm":415,"t":-1},"z":"{"}`
	if r, err = Decode([]byte(b)); err != nil || r.Values["t"] != -1 {
		t.Fatalf("nested unknown fields: %+v, %v", r, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	const ok = `"device_id":"d","seq":1,"sensor":"s","kind":"k","ts":"2026-11-25T10:15:02Z","values":{"temperature_c":1}`
	// with returns a valid payload with field key set to the raw JSON value
	// (or left out when value is "").
	with := func(key, value string) string {
		fields := [][2]string{{"v", `1`}, {"device_id", `"d"`}, {"seq", `1`}, {"sensor", `"s"`}, {"kind", `"k"`},
			{"ts", `"2026-11-25T10:15:02Z"`}, {"values", `{"temperature_c":1}`}}
		var b strings.Builder
		b.WriteByte('{')
		for _, f := range fields {
			if f[0] == key {
				f[1] = value
			}
			if f[1] == "" {
				continue
			}
			if b.Len() > 1 {
				b.WriteByte(',')
			}
			b.WriteString(`"` + f[0] + `":` + f[1])
		}
		return b.String() + "}"
	}
	tests := []struct {
		name, payload, wantErr string
	}{
		{"not json", `hello`, "invalid character"},
		{"array", `[1,2]`, "cannot unmarshal"},
		{"missing v", `{` + ok + `}`, "missing v"},
		{"version 2", `{"v":2,` + ok + `}`, "unsupported version"},
		{"missing device_id", `{"v":1,"seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":1}}`, "missing device_id"},
		{"empty device_id", `{"v":1,"device_id":"","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":1}}`, "device_id"},
		{"topic char in device_id", `{"v":1,"device_id":"a/b","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":1}}`, "device_id"},
		{"missing seq", `{"v":1,"device_id":"d","ts":"2026-11-25T10:15:02Z","values":{"t":1}}`, "missing seq"},
		{"zero seq", `{"v":1,"device_id":"d","seq":0,"ts":"2026-11-25T10:15:02Z","values":{"t":1}}`, "seq must be positive"},
		{"negative seq", `{"v":1,"device_id":"d","seq":-4,"ts":"2026-11-25T10:15:02Z","values":{"t":1}}`, "cannot unmarshal"},
		{"missing ts", `{"v":1,"device_id":"d","seq":1,"values":{"t":1}}`, "missing ts"},
		{"ts before year 1 in UTC", with("ts", `"0000-01-01T00:00:00+01:00"`), "outside 0001..9999"},
		{"ts before 2000", with("ts", `"1999-12-31T23:59:59.999Z"`), "outside 2000-01-01..9999-12-31"},
		{"ts at 1970 (a Pi before NTP)", with("ts", `"1970-01-01T00:00:42Z"`), "outside 2000-01-01"},
		{"ts past 9999 in UTC", with("ts", `"9999-12-31T23:30:00-01:00"`), "outside 0001..9999"},
		{"seq above 2^53", with("seq", `9007199254740993`), "above 2^53"},
		{"seq near 2^64", with("seq", `18446744073709551615`), "above 2^53"},
		{"missing sensor", with("sensor", ""), "sensor: not usable as an MQTT topic level: empty"},
		{"empty sensor", with("sensor", `""`), "sensor"},
		{"escape sequence in sensor", with("sensor", `"s\u001b[2J"`), "control character"},
		{"C1 control in sensor", with("sensor", "\"s\u009bJ\""), "control character"},
		{"topic char in sensor", with("sensor", `"s/t"`), "sensor"},
		{"missing kind", with("kind", ""), "kind: empty"},
		{"control char in kind", with("kind", `"k\u0007"`), "kind"},
		{"DEL in kind", with("kind", "\"k\x7f\""), "kind"},
		{"U+FFFD in kind", with("kind", `"k\ud800"`), "U+FFFD"},
		{"long kind", with("kind", `"`+strings.Repeat("k", 129)+`"`), "longer than 128"},
		{"control char in device_id", with("device_id", `"d\r"`), "device_id"},
		{"empty value key", with("values", `{"":1}`), "value key: empty"},
		{"control char in value key", with("values", `{"t\u001b]0;pwned\u0007":1}`), "value key"},
		{"duplicate top-level key", with("seq", `1,"seq":2`), `duplicate key "seq"`},
		{"duplicate value key", with("values", `{"t":1,"t":2}`), `duplicate key "t"`},
		{"duplicate value key, escaped", with("values", `{"t":1,"\u0074":2}`), "duplicate key"},
		{"top-level key differing in case", with("seq", `1,"SEQ":2`), "only in case"},
		{"duplicate key in the fast path's shape", with("device_id", `"d","device_id":"e"`), "duplicate key"},
		{"duplicate key after a nested unknown field", with("seq", `1,"x":{"a":[1,"}",{"b":"\"]"}],"c":null},"y":[],"seq":2`), `duplicate key "seq"`},
		{"bad ts", `{"v":1,"device_id":"d","seq":1,"ts":"yesterday","values":{"t":1}}`, "not RFC 3339"},
		{"no values", with("values", ""), "no values"},
		{"empty values", with("values", "{}"), "no values"},
		{"NaN literal", `{"v":1,` + ok[:len(ok)-2] + `NaN}}`, "invalid character"},
		{"overflowing number", `{"v":1,"device_id":"d","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":1e999}}`, "not a finite number"},
		{"null value", `{"v":1,"device_id":"d","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":null}}`, "null value"},
		{"string value", `{"v":1,"device_id":"d","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":"1"}}`, "not a finite number"},
		{"bad utf8", "{\"v\":1,\"device_id\":\"d\xff\",\"seq\":1,\"ts\":\"2026-11-25T10:15:02Z\",\"values\":{\"t\":1}}", "UTF-8"},
		{"too big", `{"v":1,` + ok + `,"pad":"` + strings.Repeat("x", MaxPayload) + `"}`, "limit 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.payload))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode: err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Decode: err = %q, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestMarshalJSONRefusesNonFinite(t *testing.T) {
	r := sample()
	r.Values[Temperature] = math.NaN()
	if _, err := json.Marshal(r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("json.Marshal of NaN reading: err = %v, want ErrInvalid", err)
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"pi-greenhouse-1", true}, {"bme280-0x76", true}, {"estufa-é", true},
		{"", false}, {"a/b", false}, {"a+b", false}, {"a#", false}, {"$SYS", false},
		{"tab\there", false}, {"nul\x00", false}, {strings.Repeat("a", 129), false}, {"\xff", false},
	}
	for _, tt := range tests {
		err := CheckName(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadName) {
			t.Errorf("CheckName(%q) error does not wrap ErrBadName", tt.in)
		}
	}
}

func FuzzDecode(f *testing.F) {
	r := sample()
	f.Add(Encode(nil, &r))
	f.Add([]byte(`{"v":1,"device_id":"d","seq":1,"ts":"2026-11-25T10:15:02Z","values":{"t":1e308}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		// Anything accepted must survive a round trip unchanged.
		again, err := Decode(Encode(nil, &r))
		if err != nil {
			t.Fatalf("re-decoding an accepted reading failed: %v", err)
		}
		if again.Seq != r.Seq || again.DeviceID != r.DeviceID || !again.TS.Equal(r.TS.Truncate(time.Millisecond)) ||
			len(again.Values) != len(r.Values) {
			t.Fatalf("round trip changed the reading: %+v -> %+v", r, again)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	r := sample()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = Encode(buf[:0], &r)
	}
}

func BenchmarkDecode(b *testing.B) {
	r := sample()
	p := Encode(nil, &r)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := Decode(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeSlowPath: a payload the fast path leaves to encoding/json
// (an unknown field, an escaped string).
func BenchmarkDecodeSlowPath(b *testing.B) {
	r := sample()
	p := Encode(nil, &r)
	p = append(p[:len(p)-1], `,"note":"re\"sent"}`...)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := Decode(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestParseKeepsWhatTheBufferHolds: a reading stamped at 1970 by a Pi that
// has not synced yet is a valid reading to keep (and correct later), but
// not on the wire.
func TestParseKeepsWhatTheBufferHolds(t *testing.T) {
	r := sample()
	r.TS, r.TimeSynced = time.Unix(42, 0).UTC(), false
	b := Encode(nil, &r)
	if got, err := Parse(b); err != nil || !got.TS.Equal(r.TS) {
		t.Fatalf("Parse = %+v, %v", got, err)
	}
	if _, err := Decode(b); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "outside 2000-01-01") {
		t.Fatalf("Decode = %v, want the ts bound", err)
	}
}
