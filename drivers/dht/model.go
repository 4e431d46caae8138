package dht

import (
	"fmt"
	"time"
)

// Model is the sensor on the wire; the kernel's driver is called dht11 for
// both, so the config says which one it is.
type Model int

// Supported models.
const (
	DHT11 Model = 11
	DHT22 Model = 22 // also AM2302
)

// String returns "dht11" or "dht22".
func (m Model) String() string { return fmt.Sprintf("dht%d", int(m)) }

// MinInterval is the datasheet's minimum time between two measurements.
func (m Model) MinInterval() time.Duration {
	if m == DHT11 {
		return time.Second
	}
	return 2 * time.Second
}

// Range is the datasheet's measuring range.
type Range struct{ MinC, MaxC, MinRH, MaxRH float64 }

// Range returns the measuring range of the datasheet: DHT11 (Aosong)
// 0..50 °C and 20..90 %RH; DHT22/AM2302 -40..80 °C and 0..100 %RH.
func (m Model) Range() Range {
	if m == DHT11 {
		return Range{MinC: 0, MaxC: 50, MinRH: 20, MaxRH: 90}
	}
	return Range{MinC: -40, MaxC: 80, MinRH: 0, MaxRH: 100}
}

// CheckRange returns an error wrapping ErrOutOfRange if either value is
// outside the model's measuring range.
func (m Model) CheckRange(tempC, rh float64) error {
	r := m.Range()
	if !(tempC >= r.MinC && tempC <= r.MaxC) {
		return fmt.Errorf("%s: temperature %.1f °C outside %g..%g: %w", m, tempC, r.MinC, r.MaxC, ErrOutOfRange)
	}
	if !(rh >= r.MinRH && rh <= r.MaxRH) {
		return fmt.Errorf("%s: humidity %.1f %% outside %g..%g: %w", m, rh, r.MinRH, r.MaxRH, ErrOutOfRange)
	}
	return nil
}
