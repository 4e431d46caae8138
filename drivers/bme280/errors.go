package bme280

import (
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Sentinel errors; every returned error wraps one of them and names the bus
// and address. Each has a fault class (drivers/fault), given in brackets.
var (
	// ErrNoDevice [absent] is i2cbus.ErrNoDevice: nothing acknowledged
	// the address (wiring, power, or the other address: SDO to GND is
	// 0x76, to 3V3 is 0x77).
	ErrNoDevice = i2cbus.ErrNoDevice
	// ErrBus [other; timeout when the bus timed out, absent when the bus
	// device is missing] is i2cbus.ErrBus: the bus itself failed.
	ErrBus = i2cbus.ErrBus
	// ErrWrongChip [absent]: a device answered with a chip id that is not
	// a BME280 (0x60) or BMP280 (0x58), so the configured chip is not
	// there.
	ErrWrongChip = fault.New(fault.Absent, "not a BME280/BMP280")
	// ErrOutOfRange [out_of_range]: the compensated value is outside the
	// chip's operating range, a sign of a corrupted or skipped
	// measurement.
	ErrOutOfRange = fault.New(fault.OutOfRange, "value out of the sensor's range")
)
