package sim

import "github.com/edgepipe/sensorpipe/drivers/fault"

// ErrInjected is returned by Read when Opts.FailRate decides this read
// fails. Its fault class (drivers/fault) is other.
var ErrInjected = fault.New(fault.Other, "sim: injected failure (fail_rate)")
