// Package ina219 reads a TI INA219 current/power monitor over I2C
// (0x40..0x4F): the bus voltage, and the current through a shunt resistor
// and the power computed by the chip, using periph.io's ina219 driver.
//
// periph programs the calibration register from the shunt resistance and
// the largest expected current (Opts), and the configuration register to
// 0x1FFF: 16 V bus range, ±320 mV shunt range, 128-sample averaging of
// both, continuous conversion. What we add: fault classes (the OVF bit is
// out_of_range), a range check, our units, and Probe.
//
//	s, err := ina219.New("ina219-0x40", bus, 0x40, ina219.Opts{ShuntOhms: 0.1, MaxCurrentA: 3.2})
//	v, err := s.Read(ctx) // voltage_v, current_a, power_w
//
// It does not use the 32 V bus range or the conversion-ready bit (CNVR):
// in continuous mode a conversion takes 2 x 68 ms, far less than a
// polling interval.
package ina219

import (
	"context"
	"fmt"
	"math"
	"sync"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	periph "periph.io/x/devices/v3/ina219"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Addr is the address with A0 and A1 to GND; the straps give 0x40..0x4F.
const Addr = 0x40

// Opts describe the shunt, from which periph computes the calibration.
type Opts struct {
	// ShuntOhms is the shunt resistance (0.1 on the common breakouts,
	// marked R100).
	ShuntOhms float64
	// MaxCurrentA is the largest current to measure. The current step is
	// MaxCurrentA / 32768: a smaller maximum gives finer steps; a larger
	// current reads as an overflow.
	MaxCurrentA float64
}

// DefaultOpts is the common breakout: 0.1 Ω, 3.2 A (the ±320 mV shunt
// range over 0.1 Ω).
var DefaultOpts = Opts{ShuntOhms: 0.1, MaxCurrentA: 3.2}

// CheckOpts reports an Opts periph cannot calibrate, or whose maximum
// current the shunt range cannot reach: the calibration value
// 0.04096 / (MaxCurrentA / 32768 * ShuntOhms) must fit 16 bits, so
// MaxCurrentA * ShuntOhms must be above 0.02048 V; and it must not be
// beyond the ±0.32 V shunt range, which would only coarsen the steps
// (up to 0.328 V is allowed, so a round current step of 100 µA over
// 0.1 Ω, the datasheet's example, fits).
func CheckOpts(o Opts) error {
	switch v := o.MaxCurrentA * o.ShuntOhms; {
	case !(o.ShuntOhms > 0) || math.IsInf(o.ShuntOhms, 0):
		return fmt.Errorf("shunt_ohms %v is not a positive resistance", o.ShuntOhms)
	case !(o.MaxCurrentA > 0) || math.IsInf(o.MaxCurrentA, 0):
		return fmt.Errorf("max_current_a %v is not a positive current", o.MaxCurrentA)
	case v > 0.328:
		return fmt.Errorf("max_current_a %v A through shunt_ohms %v Ω is %.3g V, beyond the INA219's ±0.32 V shunt range", o.MaxCurrentA, o.ShuntOhms, v)
	case v <= 0.02048:
		return fmt.Errorf("max_current_a %v A through shunt_ohms %v Ω is %.3g V: the calibration register overflows below 0.0205 V; raise max_current_a", o.MaxCurrentA, o.ShuntOhms, v)
	}
	return nil
}

// Sensor is one INA219.
type Sensor struct {
	name  string
	where string // "bus 1 addr 0x40", for errors

	mu  sync.Mutex
	dev *periph.Dev
}

// New calibrates and configures the INA219 at addr on bus, which the
// caller owns and closes.
func New(name string, bus i2c.Bus, addr uint16, opts Opts) (*Sensor, error) {
	where := fmt.Sprintf("%s addr 0x%02x", bus, addr)
	if opts == (Opts{}) {
		opts = DefaultOpts
	}
	if err := CheckOpts(opts); err != nil {
		return nil, fmt.Errorf("ina219 %s: %w", where, err)
	}
	dev, err := periph.New(bus, &periph.Opts{
		Address:       int(addr),
		SenseResistor: physic.ElectricResistance(math.Round(opts.ShuntOhms * float64(physic.Ohm))),
		MaxCurrent:    physic.ElectricCurrent(math.Round(opts.MaxCurrentA * float64(physic.Ampere))),
	})
	if err != nil {
		return nil, fmt.Errorf("ina219 %s: calibrate: %w: %w", where, i2cbus.Classify(err), err)
	}
	return &Sensor{name: name, where: where, dev: dev}, nil
}

// Name returns the configured name.
func (s *Sensor) Name() string { return s.name }

// Kind returns "ina219".
func (s *Sensor) Kind() string { return "ina219" }

// Read returns voltage_v (bus voltage, 4 mV steps, rounded to 1 mV),
// current_a and power_w (rounded to 1 µA and 1 µW).
func (s *Sensor) Read(ctx context.Context) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pm, err := s.dev.Sense()
	if err != nil {
		if err.Error() == "bus voltage register overflow" { // periph's unexported errRegisterOverflow
			return nil, fmt.Errorf("ina219 %s: %w", s.where, ErrOverflow)
		}
		return nil, fmt.Errorf("ina219 %s: measure: %w: %w", s.where, i2cbus.Classify(err), err)
	}
	v := float64(pm.Voltage) / float64(physic.Volt)
	if v > 26 {
		return nil, fmt.Errorf("ina219 %s: bus voltage %.3f V: %w", s.where, v, ErrOutOfRange)
	}
	return map[string]float64{
		reading.Voltage: round(v, 1e3),
		reading.Current: round(float64(pm.Current)/float64(physic.Ampere), 1e6),
		reading.Power:   round(float64(pm.Power)/float64(physic.Watt), 1e6),
	}, nil
}

// Close does nothing: the chip keeps converting (about 1 mA); the bus is
// the caller's.
func (s *Sensor) Close() error { return nil }

// Configuration register values by which Probe knows an INA219: the
// power-on default (datasheet, register 00h) and what periph writes.
const (
	configPowerOn = 0x399F
	configPeriph  = 0x1FFF
)

// Probe reads the configuration register (00h) at addr and accepts the
// power-on default or periph's setting. The INA219 has no id register,
// so one configured otherwise is not recognised. It returns "ina219" or
// an error wrapping ErrWrongChip or an i2cbus error.
func Probe(bus i2c.Bus, addr uint16) (string, error) {
	var r [2]byte
	if err := bus.Tx(addr, []byte{0x00}, r[:]); err != nil {
		return "", fmt.Errorf("%w: %w", i2cbus.Classify(err), err)
	}
	switch c := uint16(r[0])<<8 | uint16(r[1]); c {
	case configPowerOn, configPeriph:
		return "ina219", nil
	default:
		return "", fmt.Errorf("%w: configuration register 0x%04x", ErrWrongChip, c)
	}
}

func round(x, scale float64) float64 { return math.Round(x*scale) / scale }
