// Package scd4x reads a Sensirion SCD40/SCD41 (CO2, temperature, relative
// humidity) over I2C at 0x62, using periph.io's scd4x driver in periodic
// measurement mode: the chip measures every 5 s by itself and Read
// fetches the latest measurement once get_data_ready_status says there
// is one.
//
// What it adds to periph's driver: the data-ready wait is ours and honours
// the read's context (periph's Sense sleeps up to 6 s, 1 s at a time,
// whatever the caller's deadline), with a not-ready error classed timeout;
// CRC errors classed crc (periph checks every word's CRC but reports an
// untyped error); a restart of periodic measurement when no data came for
// MaxSilence (a chip reset by a brown-out comes back idle, and periph
// would poll it forever); the datasheet's range check; and Probe for
// `edge-agent sensors`.
//
//	s, err := scd4x.New("scd41-1", bus)
//	v, err := s.Read(ctx) // co2_ppm, temperature_c, humidity_pct
//
// It does not set the temperature offset, altitude, ambient pressure or
// automatic self-calibration (the chip's stored settings apply), nor use
// the SCD41's single-shot mode.
package scd4x

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	periph "periph.io/x/devices/v3/scd4x"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Addr is the SCD4x's only I2C address.
const Addr = 0x62

// Period is the periodic measurement's interval (datasheet 3.5.1); the
// agent's interval must not be shorter.
const Period = 5 * time.Second

const (
	// MaxSilence is how long Read waits for data, across Reads, before it
	// restarts periodic measurement: two periods.
	MaxSilence = 2 * Period
	// pollEvery spaces get_data_ready_status commands while waiting.
	pollEvery = 250 * time.Millisecond
)

// cmdDataReady is get_data_ready_status (datasheet 3.8.2): one word whose
// low 11 bits are 0 while no new measurement is ready.
var cmdDataReady = []byte{0xE4, 0xB8}

// Sensor is one SCD40 or SCD41.
type Sensor struct {
	name  string
	where string // "bus 1 addr 0x62", for errors
	bus   i2c.Bus
	addr  uint16

	mu       sync.Mutex
	dev      *periph.Dev // nil: restart periodic measurement on the next Read
	lastData time.Time   // last measurement read, or the start of measurement
}

// New talks to the SCD4x at Addr on bus, which the caller owns and closes:
// periph wakes the chip, stops a measurement that may be running and
// starts periodic measurement. The first measurement is ready 5 s later.
func New(name string, bus i2c.Bus) (*Sensor, error) {
	s := &Sensor{name: name, where: fmt.Sprintf("%s addr 0x%02x", bus, Addr), bus: bus, addr: Addr}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sensor) start() error {
	dev, err := periph.NewI2C(s.bus, s.addr)
	if err != nil {
		return s.wrap("start periodic measurement", err)
	}
	s.dev, s.lastData = dev, time.Now()
	return nil
}

// Name returns the configured name.
func (s *Sensor) Name() string { return s.name }

// Kind returns "scd4x".
func (s *Sensor) Kind() string { return "scd4x" }

// Read waits (within ctx) until a measurement is ready, reads it and
// returns co2_ppm, temperature_c and humidity_pct (0.01 resolution).
func (s *Sensor) Read(ctx context.Context) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dev == nil {
		if err := s.start(); err != nil {
			return nil, err
		}
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	var e periph.Env
	if err := s.dev.Sense(&e); err != nil {
		return nil, s.wrap("read_measurement", err)
	}
	s.lastData = time.Now()
	co2 := float64(e.CO2)
	t := e.Temperature.Celsius()
	h := float64(e.Humidity) / float64(physic.PercentRH)
	switch {
	case co2 > 40000:
		return nil, fmt.Errorf("scd4x %s: CO2 %v ppm: %w", s.where, co2, ErrOutOfRange)
	case t < -10 || t > 60 || math.IsNaN(t):
		return nil, fmt.Errorf("scd4x %s: temperature %.2f °C: %w", s.where, t, ErrOutOfRange)
	case h < 0 || h > 100 || math.IsNaN(h):
		return nil, fmt.Errorf("scd4x %s: humidity %.2f %%: %w", s.where, h, ErrOutOfRange)
	}
	return map[string]float64{reading.CO2: co2, reading.Temperature: round(t), reading.Humidity: round(h)}, nil
}

// waitReady polls get_data_ready_status until the chip has a measurement
// or ctx ends. Past MaxSilence without data it drops the device, so the
// next Read restarts periodic measurement.
func (s *Sensor) waitReady(ctx context.Context) error {
	for {
		ready, err := DataReady(s.bus, s.addr)
		if err != nil {
			return fmt.Errorf("scd4x %s: get_data_ready_status: %w", s.where, err)
		}
		if ready {
			return nil
		}
		if silent := time.Since(s.lastData); silent > MaxSilence {
			s.dev = nil
			return fmt.Errorf("scd4x %s: %w for %v: restarting periodic measurement", s.where, ErrNotReady, silent.Round(time.Second))
		}
		t := time.NewTimer(pollEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("scd4x %s: %w within the read's deadline: %w", s.where, ErrNotReady, ctx.Err())
		case <-t.C:
		}
	}
}

// DataReady sends get_data_ready_status and checks the reply's CRC. Its
// errors wrap ErrCRC or an i2cbus error.
func DataReady(bus i2c.Bus, addr uint16) (bool, error) {
	var r [3]byte
	if err := bus.Tx(addr, cmdDataReady, r[:]); err != nil {
		return false, fmt.Errorf("%w: %w", i2cbus.Classify(err), err)
	}
	if c := i2cbus.CRC8(r[:2]); c != r[2] {
		return false, fmt.Errorf("%w: word %02x%02x has CRC 0x%02x, want 0x%02x", ErrCRC, r[0], r[1], r[2], c)
	}
	return (uint16(r[0])<<8|uint16(r[1]))&0x07FF != 0, nil
}

// wrap classes an error of periph's driver or of the bus. periph reports
// a CRC mismatch as a plain error ending in "invalid crc".
func (s *Sensor) wrap(op string, err error) error {
	class := i2cbus.Classify(err)
	if strings.HasSuffix(err.Error(), "invalid crc") {
		class = ErrCRC
	}
	return fmt.Errorf("scd4x %s: %s: %w: %w", s.where, op, class, err)
}

// Close stops periodic measurement (periph then waits the datasheet's
// 500 ms); the bus is the caller's.
func (s *Sensor) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dev == nil {
		return nil
	}
	if err := s.dev.Halt(); err != nil {
		return s.wrap("stop_periodic_measurement", err)
	}
	return nil
}

// Probe tells an SCD4x at addr from other chips without disturbing it:
// get_data_ready_status is allowed while measuring and changes nothing,
// and its reply must carry a matching CRC. It returns "scd4x" or an error
// wrapping ErrWrongChip or an i2cbus error.
func Probe(bus i2c.Bus, addr uint16) (string, error) {
	if _, err := DataReady(bus, addr); err != nil {
		if errors.Is(err, ErrCRC) {
			return "", fmt.Errorf("%w: %w", ErrWrongChip, err)
		}
		return "", err
	}
	return "scd4x", nil
}

func round(x float64) float64 { return math.Round(x*100) / 100 }
