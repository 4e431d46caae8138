package ds18b20

import "errors"

// Sentinel errors; returned errors wrap them and name the file.
var (
	// ErrNoDevice: no 28-* device under {sysfs}/bus/w1/devices, or not the
	// configured one (is dtoverlay=w1-gpio loaded, is the 4.7k pull-up there?).
	ErrNoDevice = errors.New("no DS18B20 on the 1-Wire bus")
	// ErrCRC: the kernel's CRC check of the scratchpad failed (noise, long
	// cable, weak pull-up).
	ErrCRC = errors.New("CRC check failed")
	// ErrPowerOn: 85.000 °C, the value the chip holds before its first
	// conversion (it was reset, often by a brown-out on parasitic power).
	ErrPowerOn = errors.New("power-on reset value 85 °C")
	// ErrParse: a file the kernel should have formatted did not parse.
	ErrParse = errors.New("unparsable content")
	// ErrOutOfRange: outside the chip's -55..125 °C, or an all-zero
	// scratchpad (data line held low).
	ErrOutOfRange = errors.New("value out of the sensor's range")
)
