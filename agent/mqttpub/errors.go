package mqttpub

import "errors"

var (
	// ErrConnectionLost ends a session when the broker connection drops.
	ErrConnectionLost = errors.New("mqtt connection lost")
	// ErrAckTimeout is why a connection is dropped when a publish waits
	// too long for its PUBACK.
	ErrAckTimeout = errors.New("no PUBACK in time")
	// ErrDelete ends a session when the buffer failed to delete delivered
	// readings (disk full, I/O error): they are sent again and deleted on
	// the next acknowledgement.
	ErrDelete = errors.New("buffer delete failed")
	// ErrSubscribeRefused: the broker refused the subscription to the
	// device's ack topic (kafka mode), so no reading could be confirmed.
	ErrSubscribeRefused = errors.New("the broker refused the subscription")
	// ErrStalled is wrapped by Stalled's reports.
	ErrStalled = errors.New("publisher stalled")
	// ErrOptions is wrapped by errors about invalid Options.
	ErrOptions = errors.New("invalid mqtt options")
)
