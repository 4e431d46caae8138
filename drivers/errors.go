package drivers

import "errors"

// ErrNotImplemented is returned by Open for a driver this build cannot open.
var ErrNotImplemented = errors.New("driver not implemented")
