package bme280

import "errors"

// Sentinel errors; every returned error wraps one of them and names the bus
// and address.
var (
	// ErrNoDevice: nothing acknowledged the address (wiring, power, or the
	// other address: SDO to GND is 0x76, to 3V3 is 0x77).
	ErrNoDevice = errors.New("no device answered")
	// ErrBus: the bus itself failed (bus missing, stuck, timed out).
	ErrBus = errors.New("I2C bus error")
	// ErrWrongChip: a device answered with a chip id that is not a BME280
	// (0x60) or BMP280 (0x58).
	ErrWrongChip = errors.New("not a BME280/BMP280")
	// ErrOutOfRange: the compensated value is outside the chip's operating
	// range, a sign of a corrupted or skipped measurement.
	ErrOutOfRange = errors.New("value out of the sensor's range")
)
