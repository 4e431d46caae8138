// Package fault names the classes of sensor failures, so that the agent
// can tell a dead probe from a noisy cable without parsing messages.
//
// A driver gives each of its sentinel errors a class (New), or marks an
// error it passes through, a kernel errno for instance, with one (Mark,
// which keeps the message). Callers branch with errors.Is on the class
// sentinels (ErrAbsent, ErrCRC, ...) or ask Of for the class:
//
//	if _, err := s.Read(ctx); err != nil {
//		class := fault.Of(err) // "absent", "crc", "timeout", ...
//	}
//
// It does not log, count or retry anything; agent/health keeps the counts.
package fault

import (
	"context"
	"errors"
)

// Class is the kind of a sensor failure, as it appears in metrics labels,
// the agent's status message and `edge-agent sensors --json`.
type Class string

// The classes, from "the sensor is not there" to "nobody said".
const (
	// Absent: the configured device is not there: nothing answers on the
	// bus, no sysfs device, or another chip at the address.
	Absent Class = "absent"
	// CRC: the device answered but the frame was corrupt (checksum
	// failed, lost edges): noise, a long cable or a weak pull-up.
	CRC Class = "crc"
	// Timeout: the device or its bus did not answer in time.
	Timeout Class = "timeout"
	// OutOfRange: a value outside the chip's datasheet range, a sign of
	// a corrupted or skipped measurement.
	OutOfRange Class = "out_of_range"
	// PowerOn: the chip's power-on reset value (a DS18B20's 85 °C): it
	// was reset, often by a brown-out, and has not measured yet.
	PowerOn Class = "power_on"
	// Other: any failure a driver did not classify (unparsable files,
	// bus errors, injected failures of the simulated sensor).
	Other Class = "other"
)

// Classes lists every class, in the order above.
func Classes() []Class {
	return []Class{Absent, CRC, Timeout, OutOfRange, PowerOn, Other}
}

// Class sentinels: errors.Is(err, fault.ErrCRC) holds for every error a
// driver classed CRC.
var (
	ErrAbsent     error = &Error{class: Absent, msg: "sensor absent", sentinel: true}
	ErrCRC        error = &Error{class: CRC, msg: "corrupt frame (CRC)", sentinel: true}
	ErrTimeout    error = &Error{class: Timeout, msg: "sensor timed out", sentinel: true}
	ErrOutOfRange error = &Error{class: OutOfRange, msg: "value out of range", sentinel: true}
	ErrPowerOn    error = &Error{class: PowerOn, msg: "power-on value", sentinel: true}
	ErrOther      error = &Error{class: Other, msg: "sensor failure", sentinel: true}
)

// Error is an error with a class: a driver's sentinel (New) or an error
// marked with a class (Mark).
type Error struct {
	class Class
	msg   string
	err   error // the marked error, nil for a sentinel
	// sentinel is set on the class sentinels above, which Is matches by
	// class; a driver's sentinel matches only itself and its class's.
	sentinel bool
}

// New returns a sentinel error of class c with message msg, for a driver's
// errors.go: errors.Is matches it itself and its class sentinel.
func New(c Class, msg string) error { return &Error{class: c, msg: msg} }

// Mark returns err classed c, with err's message unchanged; errors.Is and
// errors.As still find everything err wraps. Mark(c, nil) is nil.
func Mark(c Class, err error) error {
	if err == nil {
		return nil
	}
	return &Error{class: c, err: err}
}

// Error returns the message.
func (e *Error) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return e.msg
}

// Unwrap returns the marked error.
func (e *Error) Unwrap() error { return e.err }

// Is reports whether target is the class sentinel of e's class.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.sentinel && t.class == e.class
}

// Class returns e's class.
func (e *Error) Class() Class { return e.class }

// Of returns the class of a failed read or open: the first class found in
// err's chain; Timeout for a read that outlived its context's deadline;
// Other for anything unclassified; "" for nil.
func Of(err error) Class {
	if err == nil {
		return ""
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.class
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Timeout
	}
	return Other
}
