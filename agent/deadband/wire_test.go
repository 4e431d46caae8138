package deadband

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// greenhouseTrace is a SIMULATED day of greenhouse air temperature (no
// recorded trace is at hand): 16 °C at night warming to about 27 °C in the
// afternoon sun, clouds that dim the sun for minutes at a time, the vent
// opening twice, a slow random drift, and sensor noise of 0.03 °C, rounded
// to the sensor's resolution (0.0625 °C for a DS18B20 at 12 bits).
func greenhouseTrace(n int, interval time.Duration, resolution float64) []float64 {
	rng := rand.New(rand.NewPCG(23, 2))
	out := make([]float64, n)
	cloud, drift := 1.0, 0.0
	for i := range out {
		h := float64(i) * interval.Hours()
		sun := max(0, math.Sin(math.Pi*(h-6)/14)) // 06:00..20:00
		// Clouds come and go over minutes: a mean-reverting walk in 0.3..1.
		cloud += (1-cloud)*0.01 + rng.NormFloat64()*0.02*math.Sqrt(interval.Seconds()/10)
		cloud = min(1, max(0.3, cloud))
		drift += rng.NormFloat64() * 0.002
		t := 16 + 11*sun*cloud + drift + rng.NormFloat64()*0.03
		if (h > 11 && h < 11.5) || (h > 15 && h < 15.75) { // vent open
			t -= 2.5
		}
		out[i] = math.Round(t/resolution) * resolution
	}
	return out
}

// wireBytes is what one reading costs on the broker link: its JSON payload
// in an MQTT PUBLISH (QoS 1) on its topic, plus the 4-byte PUBACK. TLS
// records and the forwarder's confirmations (seq ranges) come on top.
func wireBytes(r *reading.Reading) int {
	payload := len(reading.Encode(nil, r))
	topic := len("sensors/" + r.DeviceID + "/" + r.Sensor + "/reading")
	rest := 2 + topic + 2 + payload // topic length, topic, packet id, payload
	header := 2
	for v := rest >> 7; v > 0; v >>= 7 {
		header++ // remaining length takes one more byte per 7 bits
	}
	return header + rest + 4
}

// TestWireSavedByDeadband measures the bytes a deadband of 0.1 °C saves on
// a simulated day of greenhouse temperature, read every 10 s and every 60 s,
// by a DS18B20 (0.0625 °C steps) and a chip with 0.01 °C steps (BME280).
// Run with -v for the figures (docs/AGENT.md quotes them).
func TestWireSavedByDeadband(t *testing.T) {
	for _, tc := range []struct {
		name       string
		interval   time.Duration
		resolution float64
		minSaved   float64 // fraction; a filter that saves nothing fails
	}{
		{"ds18b20 every 10s", 10 * time.Second, 0.0625, 0.5},
		{"ds18b20 every 60s", time.Minute, 0.0625, 0.2},
		{"0.01 °C chip every 10s", 10 * time.Second, 0.01, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := int(24 * time.Hour / tc.interval)
			trace := greenhouseTrace(n, tc.interval, tc.resolution)
			clk := newClock()
			f := New(Options{Bands: map[string]float64{"temperature_c": 0.1}, Now: clk.now})
			var all, sent, stored int
			for _, v := range trace {
				r := &reading.Reading{DeviceID: "pi-greenhouse-1", Seq: uint64(48213 + stored), Sensor: "ds18b20-1",
					Kind: "ds18b20", TS: clk.now(), TimeSynced: true, Values: map[string]float64{"temperature_c": v}}
				b := wireBytes(r)
				all += b
				if !f.Suppress(r.Values) {
					f.Stored(r.Values)
					sent += b
					stored++
				}
				clk.add(tc.interval)
			}
			saved := 1 - float64(sent)/float64(all)
			t.Logf("%s: %d readings, %d stored; %d bytes without deadband, %d with 0.1 °C: %.0f%% saved",
				tc.name, n, stored, all, sent, 100*saved)
			if saved < tc.minSaved || saved >= 1 {
				t.Errorf("saved %.2f of the bytes, want at least %.2f and less than all", saved, tc.minSaved)
			}
		})
	}
}
