package config

import "github.com/edgepipe/sensorpipe/buffer/cmdline"

// ErrInvalid is wrapped by every configuration error; callers map it to exit status 2.
var ErrInvalid = cmdline.NewUsageError("invalid configuration")

// Error names the variable (or YAML key) that is wrong.
type Error struct {
	Key string // environment variable name, e.g. HIVEMQ_URL
	Msg string
}

func (e *Error) Error() string { return e.Key + ": " + e.Msg }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *Error) Unwrap() error { return ErrInvalid }
