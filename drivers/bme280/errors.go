package bme280

import "github.com/edgepipe/sensorpipe/drivers/fault"

// Sentinel errors; every returned error wraps one of them and names the bus
// and address. Each has a fault class (drivers/fault), given in brackets.
var (
	// ErrNoDevice [absent]: nothing acknowledged the address (wiring,
	// power, or the other address: SDO to GND is 0x76, to 3V3 is 0x77).
	ErrNoDevice = fault.New(fault.Absent, "no device answered")
	// ErrBus [other; timeout when the bus timed out, absent when the bus
	// device is missing]: the bus itself failed (bus missing, stuck,
	// timed out).
	ErrBus = fault.New(fault.Other, "I2C bus error")
	// ErrWrongChip [absent]: a device answered with a chip id that is not
	// a BME280 (0x60) or BMP280 (0x58), so the configured chip is not
	// there.
	ErrWrongChip = fault.New(fault.Absent, "not a BME280/BMP280")
	// ErrOutOfRange [out_of_range]: the compensated value is outside the
	// chip's operating range, a sign of a corrupted or skipped
	// measurement.
	ErrOutOfRange = fault.New(fault.OutOfRange, "value out of the sensor's range")
)

// ErrBus, classed for the two causes the class tells apart.
var (
	errBusTimeout = fault.Mark(fault.Timeout, ErrBus)
	errBusMissing = fault.Mark(fault.Absent, ErrBus)
)
