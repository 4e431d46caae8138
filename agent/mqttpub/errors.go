package mqttpub

import "errors"

var (
	// ErrConnectionLost ends a session when the broker connection drops.
	ErrConnectionLost = errors.New("mqtt connection lost")
	// ErrAckTimeout is why a connection is dropped when a publish waits
	// too long for its PUBACK.
	ErrAckTimeout = errors.New("no PUBACK in time")
	// ErrOptions is wrapped by errors about invalid Options.
	ErrOptions = errors.New("invalid mqtt options")
)
