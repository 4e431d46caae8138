package dht

import "errors"

// Sentinel errors; returned errors wrap them and name the file or frame.
var (
	// ErrNoDevice: no IIO device named dht11 under the sysfs root, or the
	// configured iio:deviceN does not exist (is dtoverlay=dht11 loaded?).
	ErrNoDevice = errors.New("no dht11 IIO device")
	// ErrParse: a sysfs file did not hold an integer.
	ErrParse = errors.New("unparsable value")
	// ErrOutOfRange: a value outside the model's datasheet range.
	ErrOutOfRange = errors.New("value out of the sensor's range")
	// ErrFrame: a frame with a checksum that matches but impossible content.
	ErrFrame = errors.New("invalid frame")
)
