package reading

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func sampleAgg() Reading {
	r := sample()
	r.Values = map[string]float64{Temperature: 21.4, Humidity: 48}
	r.Agg = &Aggregate{N: 60, Level: 1, To: r.TS.Add(59 * time.Second), Covers: [2]uint64{48000, 48200},
		Min:   map[string]float64{Temperature: 21.1, Humidity: 47.5},
		Max:   map[string]float64{Temperature: 21.6, Humidity: 48.5},
		Count: map[string]uint64{Humidity: 58}}
	return r
}

func TestAggregateRoundTrip(t *testing.T) {
	r := sampleAgg()
	b := Encode(nil, &r)
	want := `{"v":1,"device_id":"pi-greenhouse-1","seq":48213,"sensor":"bme280-0x76","kind":"bme280",` +
		`"ts":"2026-11-25T10:15:02.125Z","time_synced":true,"values":{"humidity_pct":48,"temperature_c":21.4},` +
		`"agg":{"n":60,"level":1,"to":"2026-11-25T10:16:01.125Z","covers":[48000,48200],` +
		`"min":{"humidity_pct":47.5,"temperature_c":21.1},"max":{"humidity_pct":48.5,"temperature_c":21.6},` +
		`"count":{"humidity_pct":58}}}`
	if string(b) != want {
		t.Fatalf("Encode:\n got %s\nwant %s", b, want)
	}
	back, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	a := back.Agg
	if a == nil || a.N != 60 || a.Level != 1 || !a.To.Equal(r.Agg.To) || a.Covers != r.Agg.Covers ||
		a.Min[Humidity] != 47.5 || a.Max[Temperature] != 21.6 || a.FieldCount(Humidity) != 58 || a.FieldCount(Temperature) != 60 {
		t.Fatalf("round trip changed the aggregate: %+v", a)
	}
	plain := sample()
	if back, err := Decode(Encode(nil, &plain)); err != nil || back.Agg != nil {
		t.Fatalf("a plain reading decodes with agg %+v, err %v", back.Agg, err)
	}
}

func TestAggregateRejects(t *testing.T) {
	base := string(func() []byte { r := sampleAgg(); return Encode(nil, &r) }())
	tests := []struct{ name, from, to, wantErr string }{
		{"null agg", `"agg":{"n":60`, `"agg":null,"x":{"n":60`, "not an object"},
		{"n zero", `"n":60`, `"n":0`, "n must be positive"},
		{"n missing", `"n":60,`, ``, "missing n"},
		{"level zero", `"level":1`, `"level":0`, "level 0"},
		{"to before ts", `"to":"2026-11-25T10:16:01.125Z"`, `"to":"2026-11-25T10:00:00Z"`, "to is before ts"},
		{"covers reversed", `[48000,48200]`, `[48200,48000]`, "not a range"},
		{"covers its own seq", `[48000,48200]`, `[48000,48213]`, "below its own seq"},
		{"covers one seq", `[48000,48200]`, `[48000]`, "covers must be"},
		{"mean above max", `"max":{"humidity_pct":48.5`, `"max":{"humidity_pct":47.9`, "outside min"},
		{"field without min", `"min":{"humidity_pct":47.5,`, `"min":{"pressure_hpa":1,`, "no min or max"},
		{"duplicate key in min", `"min":{"humidity_pct":47.5,`, `"min":{"humidity_pct":47.5,"humidity_pct":47.5,`, "duplicate key"},
		{"duplicate key in agg", `"n":60,`, `"n":60,"n":60,`, "duplicate key"},
		{"count above n", `"count":{"humidity_pct":58}`, `"count":{"humidity_pct":61}`, "outside 1..n"},
		{"count of unknown field", `"count":{"humidity_pct":58}`, `"count":{"co2_ppm":1}`, "not in values"},
		{"non-finite min", `"min":{"humidity_pct":47.5`, `"min":{"humidity_pct":null`, "null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(base, tt.from) {
				t.Fatalf("test is stale: %q not in %s", tt.from, base)
			}
			p := strings.Replace(base, tt.from, tt.to, 1)
			_, err := Decode([]byte(p))
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Decode(%s): err %v, want ErrInvalid containing %q", p, err, tt.wantErr)
			}
		})
	}
}
