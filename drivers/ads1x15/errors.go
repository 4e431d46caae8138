package ads1x15

import (
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Sentinel errors; every returned error wraps one of them and names the
// bus, address and channel. Each has a fault class, given in brackets.
var (
	// ErrNoDevice [absent]: nothing acknowledged the address (ADDR to
	// GND 0x48, VDD 0x49, SDA 0x4A, SCL 0x4B).
	ErrNoDevice = i2cbus.ErrNoDevice
	// ErrBus [other; timeout when the bus timed out]: the bus failed.
	ErrBus = i2cbus.ErrBus
	// ErrBusy [timeout]: the OS bit of the config register still said
	// "converting" well after the conversion time.
	ErrBusy = fault.New(fault.Timeout, "conversion still running (config OS bit 0)")
	// ErrSaturated [out_of_range]: the code is the top or bottom of the
	// range: the input is beyond full_scale_v, so the value is a bound,
	// not a measurement.
	ErrSaturated = fault.New(fault.OutOfRange, "input beyond full scale")
	// ErrWrongChip [absent]: the probe found another chip at the address.
	ErrWrongChip = fault.New(fault.Absent, "not an ADS1x15")
)
