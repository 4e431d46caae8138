package aht20

import (
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Sentinel errors; every returned error wraps one of them (or one of
// i2cbus's: ErrNoDevice [absent], ErrBus [other/timeout]) and names the
// bus and address. Each has a fault class, given in brackets.
var (
	// ErrNoDevice [absent]: nothing acknowledged 0x38.
	ErrNoDevice = i2cbus.ErrNoDevice
	// ErrBus [other; timeout when the bus timed out]: the bus failed.
	ErrBus = i2cbus.ErrBus
	// ErrNotCalibrated [power_on]: the status byte's calibration bit
	// (bit 3) is clear after the initialisation command, or a
	// measurement came back from an uncalibrated chip (it was reset,
	// typically by a brown-out). The next Read initialises it again.
	ErrNotCalibrated = fault.New(fault.PowerOn, "not calibrated (status bit 3 clear)")
	// ErrBusy [timeout]: the busy bit (status bit 7) was still set
	// 80 ms + 150 ms after the measurement was triggered.
	ErrBusy = fault.New(fault.Timeout, "measurement still busy (status bit 7)")
	// ErrCRC [crc]: the frame's CRC-8 did not match its 6 data bytes.
	ErrCRC = fault.New(fault.CRC, "CRC mismatch")
	// ErrOutOfRange [out_of_range]: a value outside the datasheet's
	// range (-40..85 °C, 0..100 %RH).
	ErrOutOfRange = fault.New(fault.OutOfRange, "value out of the sensor's range")
	// ErrWrongChip [absent]: something at 0x38 answered, but not with an
	// AHT20 frame (the probe of `edge-agent sensors`).
	ErrWrongChip = fault.New(fault.Absent, "not an AHT20")
)
