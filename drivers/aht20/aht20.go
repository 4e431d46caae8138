// Package aht20 reads an Aosong AHT20 (temperature, relative humidity)
// over I2C at 0x38, using periph.io's aht20 driver: every Read triggers
// one measurement (command 0xAC 0x33 0x00), waits the datasheet's 80 ms,
// polls the busy bit and checks the frame's CRC-8.
//
// What it adds to periph's driver: errors with a fault class (busy past
// the timeout is timeout, a CRC mismatch is crc, a chip that lost its
// calibration is power_on and is initialised again on the next Read),
// a check that the calibration bit is set after initialisation, the
// datasheet's range check, and Probe for `edge-agent sensors`.
//
//	s, err := aht20.New("aht20-1", bus)
//	v, err := s.Read(ctx) // temperature_c, humidity_pct
//
// It does not support the AHT10/AHT15 (no CRC, another init command).
package aht20

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	periph "periph.io/x/devices/v3/aht20"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Addr is the AHT20's only I2C address.
const Addr = 0x38

// Status byte (datasheet 5.3) and commands (5.4).
const (
	cmdStatus     = 0x71
	bitBusy       = 1 << 7
	bitCalibrated = 1 << 3
)

// opts is periph's defaults, spelled out: after the 80 ms wait, poll the
// busy bit every 10 ms for up to 150 ms, and always check the CRC.
var opts = periph.Opts{
	MeasurementReadTimeout:  150 * time.Millisecond,
	MeasurementWaitInterval: 10 * time.Millisecond,
	ValidateData:            true,
}

// Sensor is one AHT20.
type Sensor struct {
	name  string
	where string // "bus 1 addr 0x38", for errors
	bus   i2c.Bus

	mu  sync.Mutex
	dev *periph.Dev // nil after the chip lost its calibration
}

// New talks to the AHT20 on bus, which the caller owns and closes: it
// reads the status, initialises (calibrates) the chip if bit 3 is clear
// and checks that it is set afterwards.
func New(name string, bus i2c.Bus) (*Sensor, error) {
	s := &Sensor{name: name, where: fmt.Sprintf("%s addr 0x%02x", bus, Addr), bus: bus}
	if err := s.init(); err != nil {
		return nil, err
	}
	return s, nil
}

// init (re)creates periph's device, which initialises an uncalibrated
// chip, then checks the calibration bit.
func (s *Sensor) init() error {
	dev, err := periph.NewI2C(s.bus, &opts)
	if err != nil {
		return s.wrap("init", err)
	}
	var st [1]byte
	if err := s.bus.Tx(Addr, []byte{cmdStatus}, st[:]); err != nil {
		return s.wrap("read status", err)
	}
	if st[0]&bitCalibrated == 0 {
		return fmt.Errorf("aht20 %s: status 0x%02x after init: %w", s.where, st[0], ErrNotCalibrated)
	}
	s.dev = dev
	return nil
}

// Name returns the configured name.
func (s *Sensor) Name() string { return s.name }

// Kind returns "aht20".
func (s *Sensor) Kind() string { return "aht20" }

// Read measures once (about 80 ms) and returns temperature_c and
// humidity_pct, rounded to 0.01.
func (s *Sensor) Read(ctx context.Context) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dev == nil {
		if err := s.init(); err != nil {
			return nil, err
		}
	}
	var e physic.Env
	if err := s.dev.Sense(&e); err != nil {
		if errors.As(err, new(*periph.NotInitializedError)) {
			s.dev = nil // initialise again on the next Read
		}
		return nil, s.wrap("measure", err)
	}
	t := e.Temperature.Celsius()
	h := float64(e.Humidity) / float64(physic.PercentRH)
	if t < -40 || t > 85 || math.IsNaN(t) {
		return nil, fmt.Errorf("aht20 %s: temperature %.2f °C: %w", s.where, t, ErrOutOfRange)
	}
	if h < 0 || h > 100 || math.IsNaN(h) {
		return nil, fmt.Errorf("aht20 %s: humidity %.2f %%: %w", s.where, h, ErrOutOfRange)
	}
	return map[string]float64{reading.Temperature: round(t), reading.Humidity: round(h)}, nil
}

// wrap classes an error of periph's driver or of the bus.
func (s *Sensor) wrap(op string, err error) error {
	var class error
	switch {
	case errors.As(err, new(*periph.DataCorruptionError)):
		class = ErrCRC
	case errors.As(err, new(*periph.ReadTimeoutError)):
		class = ErrBusy
	case errors.As(err, new(*periph.NotInitializedError)):
		class = ErrNotCalibrated
	default:
		class = i2cbus.Classify(err)
	}
	return fmt.Errorf("aht20 %s: %s: %w: %w", s.where, op, class, err)
}

// Close does nothing: the chip sleeps between measurements by itself, and
// the bus is the caller's.
func (s *Sensor) Close() error { return nil }

// Probe tells an AHT20 at addr from other chips with a plain 7-byte read,
// no write: the AHT20 answers with its status and its last measurement,
// and requires the frame's CRC-8 to match and the calibration bit to be
// set. A write could change another chip at 0x38: a PCF8574A I/O
// expander drives its pins with every byte written to it. It returns
// "aht20" or an error wrapping ErrWrongChip or an i2cbus error.
func Probe(bus i2c.Bus, addr uint16) (string, error) {
	var f [7]byte
	if err := bus.Tx(addr, nil, f[:]); err != nil {
		return "", fmt.Errorf("read: %w: %w", i2cbus.Classify(err), err)
	}
	if i2cbus.CRC8(f[:6]) != f[6] || f[0]&bitCalibrated == 0 {
		return "", fmt.Errorf("%w: frame % x", ErrWrongChip, f)
	}
	return "aht20", nil
}

func round(x float64) float64 { return math.Round(x*100) / 100 }
