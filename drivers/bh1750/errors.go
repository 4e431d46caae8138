package bh1750

import (
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Sentinel errors; every returned error wraps one of them and names the
// bus and address. Each has a fault class, given in brackets.
var (
	// ErrNoDevice [absent]: nothing acknowledged the address (ADDR low
	// is 0x23, high is 0x5C).
	ErrNoDevice = i2cbus.ErrNoDevice
	// ErrBus [other; timeout when the bus timed out]: the bus failed.
	ErrBus = i2cbus.ErrBus
	// ErrSaturated [out_of_range]: the count is 0xFFFF, the top of the
	// range (about 54 600 lx, 27 300 lx in high2): the light is brighter
	// than the chip can tell, so the value would be a floor, not a
	// measurement.
	ErrSaturated = fault.New(fault.OutOfRange, "saturated (count 0xFFFF)")
)
