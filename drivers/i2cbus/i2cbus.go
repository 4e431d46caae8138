// Package i2cbus opens Linux I2C buses for the I2C drivers (bme280,
// scd4x, aht20, bh1750, ads1x15, ina219) and turns periph's bus errors
// into the fault classes the agent reports: nothing answering the address
// is absent, a timed-out bus is timeout, anything else is other.
//
//	bus, err := i2cbus.Open("1") // "1", "I2C1" or "/dev/i2c-1"
//	...
//	if err := bus.Tx(addr, w, r); err != nil {
//		return fmt.Errorf("read status: %w: %w", i2cbus.Classify(err), err)
//	}
//
// It does not talk to any chip; the drivers do.
package i2cbus

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// Sentinel errors; Classify returns one of them.
var (
	// ErrNoDevice [absent]: nothing acknowledged the address (wiring,
	// power, or a chip strapped to another address).
	ErrNoDevice = fault.New(fault.Absent, "no device answered")
	// ErrBus [other; timeout when the bus timed out, absent when the bus
	// device is missing]: the bus itself failed (bus missing, stuck,
	// timed out).
	ErrBus = fault.New(fault.Other, "I2C bus error")
)

// ErrBus, classed for the two causes the class tells apart.
var (
	ErrBusTimeout = fault.Mark(fault.Timeout, ErrBus)
	ErrBusMissing = fault.Mark(fault.Absent, ErrBus)
)

// Opener opens an I2C bus by name. Open is the real one; tests pass a
// fixture bus instead.
type Opener func(name string) (i2c.BusCloser, error)

var hostInit = sync.OnceValue(func() error {
	_, err := host.Init()
	return err
})

// Open initialises periph's host drivers (once) and opens the Linux I2C
// bus name ("1", "I2C1" or "/dev/i2c-1"). Its errors wrap ErrBus, classed
// absent when the bus device does not exist.
func Open(name string) (i2c.BusCloser, error) {
	if err := hostInit(); err != nil {
		return nil, fmt.Errorf("periph host init: %w: %w", ErrBus, err)
	}
	num := strings.TrimPrefix(name, "/dev/i2c-")
	// periph's own message for a missing bus blames Init(); say what is missing.
	if _, err := strconv.Atoi(num); err == nil {
		if _, err := os.Stat("/dev/i2c-" + num); err != nil {
			return nil, fmt.Errorf("%w: no /dev/i2c-%s (enable I2C with dtparam=i2c_arm=on in config.txt and reboot)", ErrBusMissing, num)
		}
	}
	bus, err := i2creg.Open(num)
	if err != nil {
		return nil, fmt.Errorf("open I2C bus (is I2C enabled? dtparam=i2c_arm=on in config.txt): %w: %w", ErrBusMissing, err)
	}
	return bus, nil
}

// Classify maps a bus error to ErrNoDevice or ErrBus (classed timeout when
// the bus timed out: a stuck SDA line, a clock-stretching chip). periph's
// Linux bus formats the errno with %v, so the text is all that is left of
// it.
func Classify(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.ENXIO), errors.Is(err, syscall.EREMOTEIO),
		strings.Contains(msg, syscall.ENXIO.Error()), strings.Contains(msg, syscall.EREMOTEIO.Error()):
		return ErrNoDevice
	case errors.Is(err, syscall.ETIMEDOUT), strings.Contains(msg, syscall.ETIMEDOUT.Error()):
		return ErrBusTimeout
	default:
		return ErrBus
	}
}

// Where names a chip for error messages: "bus 1 addr 0x62".
func Where(bus string, addr uint16) string {
	return fmt.Sprintf("bus %s addr 0x%02x", bus, addr)
}

// CRC8 is the Sensirion/Aosong CRC-8 (polynomial 0x31, x^8+x^5+x^4+1,
// initial value 0xFF, no reflection, no final XOR) that the SCD4x puts
// after every 16-bit word and the AHT20 after its 6 data bytes. It is
// written here, not taken from periph, so the tests check periph's reading
// of the frame against an independent implementation.
func CRC8(data []byte) byte {
	crc := byte(0xFF)
	for _, b := range data {
		crc ^= b
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
