package ds18b20

import "github.com/edgepipe/sensorpipe/drivers/fault"

// Sentinel errors; returned errors wrap them and name the file. Each has a
// fault class (drivers/fault), given in brackets; a device file that
// vanishes between two reads (unplugged) is absent too.
var (
	// ErrNoDevice [absent]: no 28-* device under {sysfs}/bus/w1/devices,
	// or not the configured one (is dtoverlay=w1-gpio loaded, is the 4.7k
	// pull-up there?).
	ErrNoDevice = fault.New(fault.Absent, "no DS18B20 on the 1-Wire bus")
	// ErrCRC [crc]: the kernel's CRC check of the scratchpad failed
	// (noise, long cable, weak pull-up).
	ErrCRC = fault.New(fault.CRC, "CRC check failed")
	// ErrPowerOn [power_on]: 85.000 °C, the value the chip holds before
	// its first conversion (it was reset, often by a brown-out on
	// parasitic power).
	ErrPowerOn = fault.New(fault.PowerOn, "power-on reset value 85 °C")
	// ErrParse [other]: a file the kernel should have formatted did not
	// parse.
	ErrParse = fault.New(fault.Other, "unparsable content")
	// ErrOutOfRange [out_of_range]: outside the chip's -55..125 °C, or an
	// all-zero scratchpad (data line held low).
	ErrOutOfRange = fault.New(fault.OutOfRange, "value out of the sensor's range")
)
