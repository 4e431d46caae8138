package scd4x

import (
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Sentinel errors; every returned error wraps one of them (or i2cbus's
// ErrNoDevice [absent] / ErrBus [other, timeout]) and names the bus and
// address. Each has a fault class, given in brackets.
var (
	// ErrNoDevice [absent]: nothing acknowledged 0x62.
	ErrNoDevice = i2cbus.ErrNoDevice
	// ErrBus [other; timeout when the bus timed out]: the bus failed.
	ErrBus = i2cbus.ErrBus
	// ErrNotReady [timeout]: get_data_ready_status said no new
	// measurement until the read's deadline. After MaxSilence without
	// data the next Read restarts periodic measurement (a chip reset by
	// a brown-out comes back idle).
	ErrNotReady = fault.New(fault.Timeout, "no measurement ready")
	// ErrCRC [crc]: a word's CRC-8 did not match.
	ErrCRC = fault.New(fault.CRC, "CRC mismatch")
	// ErrOutOfRange [out_of_range]: CO2 above the 40000 ppm output
	// range, or temperature/humidity outside -10..60 °C / 0..100 %RH.
	ErrOutOfRange = fault.New(fault.OutOfRange, "value out of the sensor's range")
	// ErrWrongChip [absent]: something at 0x62 answered, but not with a
	// CRC-checked Sensirion word (the probe of `edge-agent sensors`).
	ErrWrongChip = fault.New(fault.Absent, "not an SCD4x")
)
