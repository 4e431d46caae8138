package forwarder

import "errors"

// ErrShutdownTimeout is returned by Run when in-flight records could not be
// flushed within Config.ShutdownTimeout; they were not acked on MQTT, so the
// broker delivers them again to the next session.
var ErrShutdownTimeout = errors.New("shutdown timeout: in-flight records not acknowledged")

// ErrTopicMismatch is wrapped by the error a reading is dead-lettered with
// when its device_id or sensor differs from the levels of the topic it was
// published on ({prefix}/{device_id}/{sensor}/reading): a device speaks only
// for itself, and the broker's ACLs bind a device to its topics only.
var ErrTopicMismatch = errors.New("reading does not match its topic")
