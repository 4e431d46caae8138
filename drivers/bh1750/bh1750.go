// Package bh1750 reads a ROHM BH1750FVI ambient light sensor (illuminance)
// over I2C at 0x23 or 0x5C, using periph.io's bh1750 driver in one of the
// chip's continuous measurement modes: high (1 lx steps, 120 ms), high2
// (0.5 lx, 120 ms) or low (4 lx, 16 ms).
//
// periph's driver powers the chip on and sets the mode (NewI2C,
// SetResolution). The measurement itself is ours, with periph's
// transactions: periph's Sense converts with physic.LuminousFlux(count /
// 1.2), an integer, so it drops the fraction (the 0.5 lx steps of high2
// entirely), and it does not halve the count in high2 as the datasheet
// does. Ours also waits the datasheet's maximum measurement time within
// the read's context, reports saturation as out_of_range, and Close
// really powers the chip down (periph's Halt sends the reset opcode 0x07,
// which does not).
//
//	s, err := bh1750.New("bh1750-0x23", bus, 0x23, bh1750.DefaultOpts)
//	v, err := s.Read(ctx) // illuminance_lux
//
// The chip has no identification register, so `edge-agent sensors`
// cannot tell it from other chips at 0x23/0x5C and does not probe it.
// The measurement time register (MTreg) stays at its default of 69.
package bh1750

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	periph "periph.io/x/devices/v3/bh1750"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Addresses: ADDR pin low (most breakouts) or high.
const (
	Addr    = 0x23
	AddrAlt = 0x5C
)

// opPowerDown is the datasheet's "Power Down" opcode.
const opPowerDown = 0x00

// Maximum measurement times (datasheet, electrical characteristics):
// H-resolution modes 180 ms (typically 120), L-resolution 24 ms (16).
const (
	maxHighRes = 180 * time.Millisecond
	maxLowRes  = 24 * time.Millisecond
)

// Opts chooses the resolution, which trades steps against measurement time.
type Opts struct {
	// Resolution is "high" (1 lx steps, 120 ms, the datasheet's
	// recommendation), "high2" (0.5 lx steps, 120 ms, for dim light;
	// saturates at half the lux) or "low" (4 lx steps, 16 ms).
	Resolution string
}

// DefaultOpts is high resolution.
var DefaultOpts = Opts{Resolution: "high"}

// Resolutions maps Opts.Resolution to periph's continuous modes and the
// divisor of the count: datasheet, "Measurement sequence": lx = count /
// 1.2, and in H-resolution mode2 half of that.
var resolutions = map[string]struct {
	mode    periph.Resolution
	divisor float64
	wait    time.Duration
}{
	"high":  {periph.ContinuousHighResMode, 1.2, maxHighRes},
	"high2": {periph.ContinuousHighResMode2, 2.4, maxHighRes},
	"low":   {periph.ContinuousLowResMode, 1.2, maxLowRes},
}

// Resolutions lists the accepted values of Opts.Resolution.
func Resolutions() []string { return []string{"high", "high2", "low"} }

// Sensor is one BH1750.
type Sensor struct {
	name    string
	where   string // "bus 1 addr 0x23", for errors
	bus     i2c.Bus
	addr    uint16
	mode    periph.Resolution
	divisor float64
	wait    time.Duration

	mu sync.Mutex
}

// New talks to the BH1750 at addr on bus, which the caller owns and
// closes: it powers the chip on and starts continuous measurement in the
// chosen resolution.
func New(name string, bus i2c.Bus, addr uint16, opts Opts) (*Sensor, error) {
	where := fmt.Sprintf("%s addr 0x%02x", bus, addr)
	if opts.Resolution == "" {
		opts.Resolution = DefaultOpts.Resolution
	}
	r, ok := resolutions[opts.Resolution]
	if !ok {
		return nil, fmt.Errorf("bh1750 %s: resolution %q is not high, high2 or low", where, opts.Resolution)
	}
	dev, err := periph.NewI2C(bus, addr)
	if err != nil {
		return nil, fmt.Errorf("bh1750 %s: init: %w: %w", where, i2cbus.Classify(err), err)
	}
	if err := dev.SetResolution(r.mode); err != nil {
		return nil, fmt.Errorf("bh1750 %s: set resolution %s: %w: %w", where, opts.Resolution, i2cbus.Classify(err), err)
	}
	return &Sensor{name: name, where: where, bus: bus, addr: addr, mode: r.mode, divisor: r.divisor, wait: r.wait}, nil
}

// Name returns the configured name.
func (s *Sensor) Name() string { return s.name }

// Kind returns "bh1750".
func (s *Sensor) Kind() string { return "bh1750" }

// Read restarts a measurement by sending the mode again (which also
// powers on a chip that a brown-out left powered down), waits the maximum
// measurement time, reads the two-byte count and returns illuminance_lux,
// rounded to 0.01.
func (s *Sensor) Read(ctx context.Context) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.bus.Tx(s.addr, []byte{byte(s.mode)}, nil); err != nil {
		return nil, fmt.Errorf("bh1750 %s: start measurement: %w: %w", s.where, i2cbus.Classify(err), err)
	}
	t := time.NewTimer(s.wait)
	select {
	case <-ctx.Done():
		t.Stop()
		return nil, fmt.Errorf("bh1750 %s: waiting for the measurement: %w", s.where, ctx.Err())
	case <-t.C:
	}
	var b [2]byte
	if err := s.bus.Tx(s.addr, nil, b[:]); err != nil {
		return nil, fmt.Errorf("bh1750 %s: read: %w: %w", s.where, i2cbus.Classify(err), err)
	}
	count := binary.BigEndian.Uint16(b[:])
	if count == 0xFFFF {
		return nil, fmt.Errorf("bh1750 %s: %w", s.where, ErrSaturated)
	}
	return map[string]float64{reading.Illuminance: Lux(count, s.divisor)}, nil
}

// Lux converts a count: count / divisor (1.2, or 2.4 in high2), rounded
// to 0.01.
func Lux(count uint16, divisor float64) float64 {
	return math.Round(float64(count)/divisor*100) / 100
}

// Close powers the chip down (opcode 0x00); the bus is the caller's.
func (s *Sensor) Close() error {
	if err := s.bus.Tx(s.addr, []byte{opPowerDown}, nil); err != nil {
		return fmt.Errorf("bh1750 %s: power down: %w: %w", s.where, i2cbus.Classify(err), err)
	}
	return nil
}
