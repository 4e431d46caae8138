package forwarder

import "errors"

// ErrShutdownTimeout is returned by Run when in-flight records could not be
// flushed within Config.ShutdownTimeout; they were not acked on MQTT, so the
// broker delivers them again to the next session.
var ErrShutdownTimeout = errors.New("shutdown timeout: in-flight records not acknowledged")
