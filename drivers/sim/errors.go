package sim

import "errors"

// ErrInjected is returned by Read when Opts.FailRate decides this read fails.
var ErrInjected = errors.New("sim: injected failure (fail_rate)")
