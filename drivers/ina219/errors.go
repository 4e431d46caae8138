package ina219

import (
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Sentinel errors; every returned error wraps one of them and names the
// bus and address. Each has a fault class, given in brackets.
var (
	// ErrNoDevice [absent]: nothing acknowledged the address (A0/A1
	// straps: 0x40..0x4F).
	ErrNoDevice = i2cbus.ErrNoDevice
	// ErrBus [other; timeout when the bus timed out]: the bus failed.
	// periph replaces bus errors during a measurement by its own
	// ("failed to read shunt voltage"), so those are other, not absent.
	ErrBus = i2cbus.ErrBus
	// ErrOverflow [out_of_range]: the bus voltage register's OVF bit:
	// the current or power calculation overflowed (more current than
	// max_current_a, or a shunt voltage beyond ±320 mV).
	ErrOverflow = fault.New(fault.OutOfRange, "math overflow (OVF): current beyond max_current_a")
	// ErrOutOfRange [out_of_range]: a bus voltage beyond the 26 V the
	// chip can measure.
	ErrOutOfRange = fault.New(fault.OutOfRange, "value out of the sensor's range")
	// ErrWrongChip [absent]: the probe found another chip (or an INA219
	// configured by someone else) at the address.
	ErrWrongChip = fault.New(fault.Absent, "not an INA219")
)
