// Package secret holds the one type both programs keep credentials in (the
// agent's MQTT password, the forwarder's broker password and Kafka API
// secret, the sink's database URL). A Secret never shows its value: fmt
// (%v, %+v, %s, %#v), slog (text and JSON) and every text encoder (JSON,
// YAML) print "[redacted]", or nothing when it is empty, so a config dump
// or a log line cannot leak it. Reveal is the one way to the value, for the
// place that sends it.
//
// It lives beside the wire formats because both binaries share it; it does
// not read files or the environment (each config package does).
package secret

import "log/slog"

// Secret is a credential that never prints.
type Secret string

const redacted = "[redacted]"

// String redacts the secret for fmt; an empty secret prints as "".
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts the secret for %#v.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// LogValue redacts the secret for slog, whatever the handler.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText redacts the secret in JSON, YAML and other encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }
