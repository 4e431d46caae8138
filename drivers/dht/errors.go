package dht

import "github.com/edgepipe/sensorpipe/drivers/fault"

// Sentinel errors; returned errors wrap them and name the file or frame.
// Each has a fault class (drivers/fault), given in brackets. The kernel's
// own errors are classed too: EIO (checksum failed, lost edges) is crc,
// ETIMEDOUT (the sensor did not answer) is timeout, a vanished file is
// absent.
var (
	// ErrNoDevice [absent]: no IIO device named dht11 under the sysfs
	// root, or the configured iio:deviceN does not exist (is
	// dtoverlay=dht11 loaded?).
	ErrNoDevice = fault.New(fault.Absent, "no dht11 IIO device")
	// ErrParse [other]: a sysfs file did not hold an integer.
	ErrParse = fault.New(fault.Other, "unparsable value")
	// ErrOutOfRange [out_of_range]: a value outside the model's datasheet
	// range.
	ErrOutOfRange = fault.New(fault.OutOfRange, "value out of the sensor's range")
	// ErrFrame [crc]: a frame with a checksum that matches but impossible
	// content.
	ErrFrame = fault.New(fault.CRC, "invalid frame")
)
