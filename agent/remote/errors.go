package remote

import (
	"errors"

	"github.com/edgepipe/sensorpipe/buffer/sign/envelope"
)

// Sentinel errors; every refusal wraps one, so callers and tests branch
// with errors.Is.
var (
	// ErrSignature: the document or command is unsigned, or no pinned
	// fleet key verifies its signature.
	ErrSignature = envelope.ErrSignature
	// ErrMalformed: the message does not decode.
	ErrMalformed = envelope.ErrMalformed
	// ErrTarget: the document names another level, group or device than
	// the topic it arrived on.
	ErrTarget = errors.New("wrong target")
	// ErrOldVersion: the version is older than the one in force (or one
	// already refused).
	ErrOldVersion = errors.New("version older than the one in force")
	// ErrLocalKey: the document sets a key that stays local (identity,
	// broker, credentials, key files, paths).
	ErrLocalKey = errors.New("key cannot be changed remotely")
	// ErrInvalid: the layered config fails the checks of `config check`.
	ErrInvalid = errors.New("config does not validate")
	// ErrExpired: the command expired (or is not valid yet).
	ErrExpired = errors.New("command expired")
	// ErrReplayed: a command with this id was already received.
	ErrReplayed = errors.New("command id already seen")
	// ErrUnknownCommand: the command name is not one the agent runs.
	ErrUnknownCommand = errors.New("unknown command")
)
