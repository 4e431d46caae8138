// Package bme280 reads a Bosch BME280 (temperature, humidity, pressure) or
// BMP280 (no humidity) over I2C, using periph.io's bmxx80 driver in forced
// mode: every Read triggers one measurement and the chip sleeps in between,
// so it does not self-heat.
//
// New takes the bus (drivers/i2cbus opens a real one), so tests replay
// recorded traffic:
//
//	s, err := bme280.New("bme280-0x76", bus, 0x76, bme280.DefaultOpts)
//	v, err := s.Read(ctx) // temperature_c, humidity_pct, pressure_hpa
//
// It does not support SPI or the BMP180/BME680.
package bme280

import (
	"context"
	"fmt"
	"math"
	"sync"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Chip ids in register 0xD0.
const (
	ChipIDBME280 = 0x60
	ChipIDBMP280 = 0x58
)

const (
	regChipID = 0xD0
	regConfig = 0xF5
	// standby 1 s in config bits 7..5: what bmxx80 writes; unused in forced mode.
	configStandby = 5 << 5
)

// Opts trades noise against measurement time.
type Opts struct {
	// Oversampling of temperature, pressure and humidity: 1, 2, 4, 8 or 16.
	// 1 is the datasheet's "weather monitoring" setting (lowest power);
	// 16 lowers pressure noise to about 1.3 Pa but takes about 100 ms.
	Oversampling int
	// Filter is the IIR filter coefficient: 0 (off), 2, 4, 8 or 16. It
	// removes short pressure spikes (doors, wind) but makes changes show
	// up over several reads.
	Filter int
}

// DefaultOpts is 4x oversampling, filter off: low noise, about 30 ms per read.
var DefaultOpts = Opts{Oversampling: 4}

// Sensor is one BME280 or BMP280.
type Sensor struct {
	name  string
	where string // "bus 1 addr 0x76", for errors
	kind  string
	dev   *bmxx80.Dev
	bus   i2c.Bus

	mu sync.Mutex
}

// New talks to the chip at addr on bus, which the caller owns and closes.
// It checks the chip id, loads the calibration, sets oversampling and
// filter, and leaves the chip asleep.
func New(name string, bus i2c.Bus, addr uint16, opts Opts) (*Sensor, error) {
	where := fmt.Sprintf("%s addr 0x%02x", bus, addr)
	ovs, err := oversampling(opts.Oversampling)
	if err != nil {
		return nil, fmt.Errorf("bme280 %s: %w", where, err)
	}
	filter, err := filterCode(opts.Filter)
	if err != nil {
		return nil, fmt.Errorf("bme280 %s: %w", where, err)
	}
	kind, err := Probe(bus, addr)
	if err != nil {
		return nil, fmt.Errorf("bme280 %s: %w", where, err)
	}
	dev, err := bmxx80.NewI2C(bus, addr, &bmxx80.Opts{Temperature: ovs, Pressure: ovs, Humidity: ovs})
	if err != nil {
		return nil, fmt.Errorf("%s %s: init: %w: %w", kind, where, classify(err), err)
	}
	// bmxx80 only programs the IIR filter for continuous (normal) mode; the
	// chip applies it in forced mode too, so set it here while it sleeps.
	if filter != 0 {
		if err := bus.Tx(addr, []byte{regConfig, configStandby | filter<<2}, nil); err != nil {
			return nil, fmt.Errorf("%s %s: set filter: %w: %w", kind, where, classify(err), err)
		}
	}
	return &Sensor{name: name, where: where, kind: kind, dev: dev, bus: bus}, nil
}

// Probe reads the chip id at addr and returns "bme280" or "bmp280", or an
// error wrapping ErrNoDevice, ErrBus or ErrWrongChip.
func Probe(bus i2c.Bus, addr uint16) (string, error) {
	var id [1]byte
	if err := bus.Tx(addr, []byte{regChipID}, id[:]); err != nil {
		return "", fmt.Errorf("read chip id: %w: %w", classify(err), err)
	}
	switch id[0] {
	case ChipIDBME280:
		return "bme280", nil
	case ChipIDBMP280:
		return "bmp280", nil
	case 0x55:
		return "", fmt.Errorf("%w: chip id 0x55 is a BMP180", ErrWrongChip)
	case 0x61:
		return "", fmt.Errorf("%w: chip id 0x61 is a BME680", ErrWrongChip)
	default:
		return "", fmt.Errorf("%w: chip id 0x%02x (want 0x60 BME280 or 0x58 BMP280)", ErrWrongChip, id[0])
	}
}

// classify is i2cbus.Classify, named for brevity.
func classify(err error) error { return i2cbus.Classify(err) }

// Name returns the configured name.
func (s *Sensor) Name() string { return s.name }

// Kind returns the chip found: "bme280" or "bmp280".
func (s *Sensor) Kind() string { return s.kind }

// Read triggers one forced-mode measurement and returns temperature_c,
// pressure_hpa and, on a BME280, humidity_pct.
func (s *Sensor) Read(ctx context.Context) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var e physic.Env
	if err := s.dev.Sense(&e); err != nil {
		return nil, fmt.Errorf("%s %s: measure: %w: %w", s.kind, s.where, classify(err), err)
	}
	v := make(map[string]float64, 3)
	if err := s.convert(&e, v); err != nil {
		return nil, err
	}
	return v, nil
}

// convert turns periph's typed units into the wire format's keys, once,
// and rejects values outside the datasheet's operating range
// (-40..85 °C, 300..1100 hPa, 0..100 %RH).
func (s *Sensor) convert(e *physic.Env, v map[string]float64) error {
	t := e.Temperature.Celsius()
	p := float64(e.Pressure) / float64(100*physic.Pascal)
	if t < -40 || t > 85 || math.IsNaN(t) {
		return fmt.Errorf("%s %s: temperature %.2f °C: %w", s.kind, s.where, t, ErrOutOfRange)
	}
	if p < 300 || p > 1100 || math.IsNaN(p) {
		return fmt.Errorf("%s %s: pressure %.2f hPa: %w", s.kind, s.where, p, ErrOutOfRange)
	}
	v[reading.Temperature] = round(t, 100)
	v[reading.Pressure] = round(p, 100)
	if s.kind == "bme280" {
		h := float64(e.Humidity) / float64(physic.PercentRH)
		if h < 0 || h > 100 || math.IsNaN(h) {
			return fmt.Errorf("%s %s: humidity %.2f %%: %w", s.kind, s.where, h, ErrOutOfRange)
		}
		v[reading.Humidity] = round(h, 100)
	}
	return nil
}

// Close puts the chip to sleep; the bus is the caller's.
func (s *Sensor) Close() error { return s.dev.Halt() }

func oversampling(n int) (bmxx80.Oversampling, error) {
	switch n {
	case 0:
		return oversampling(DefaultOpts.Oversampling)
	case 1:
		return bmxx80.O1x, nil
	case 2:
		return bmxx80.O2x, nil
	case 4:
		return bmxx80.O4x, nil
	case 8:
		return bmxx80.O8x, nil
	case 16:
		return bmxx80.O16x, nil
	}
	return 0, fmt.Errorf("oversampling %d is not 1, 2, 4, 8 or 16", n)
}

func filterCode(n int) (byte, error) {
	switch n {
	case 0:
		return 0, nil
	case 2:
		return 1, nil
	case 4:
		return 2, nil
	case 8:
		return 3, nil
	case 16:
		return 4, nil
	}
	return 0, fmt.Errorf("filter %d is not 0, 2, 4, 8 or 16", n)
}

func round(x, scale float64) float64 { return math.Round(x*scale) / scale }
