package remote

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// ConfigPurpose and CommandPurpose are the contexts the fleet key signs
// under, so a signature made for one never verifies as the other, nor as
// a confirmation or a release.
const (
	ConfigPurpose  = "sensorpipe fleet config v1"
	CommandPurpose = "sensorpipe fleet command v1"
)

// WireVersion is the "v" of config documents, commands and results.
const WireVersion = 1

// Level is where a config document applies.
type Level string

// The levels, in the order they are layered: a later level overrides an
// earlier one key by key.
const (
	LevelFleet  Level = "fleet"
	LevelGroup  Level = "group"
	LevelDevice Level = "device"
)

// Levels lists the levels in layering order.
var Levels = [...]Level{LevelFleet, LevelGroup, LevelDevice}

// Topics of the fleet (docs/DESIGN.md, "Fleet").
func ConfigTopic(prefix string, l Level, target string) string {
	switch l {
	case LevelFleet:
		return prefix + "/$fleet/config"
	case LevelGroup:
		return prefix + "/$group/" + target + "/config"
	default:
		return prefix + "/" + target + "/config"
	}
}

// CommandTopic is where a device's commands arrive.
func CommandTopic(prefix, device string) string { return prefix + "/" + device + "/cmd" }

// ResultTopic is where a device answers its commands.
func ResultTopic(prefix, device string) string { return prefix + "/" + device + "/result" }

// Doc is the signed part of a config document.
type Doc struct {
	Level   Level     `json:"level"`
	Target  string    `json:"target,omitempty"` // group name or device id; empty for the fleet
	Version uint64    `json:"version"`
	Issued  time.Time `json:"issued"`
	// Config holds the remotely changeable keys, nested as in the agent's
	// config file (see Allowed).
	Config map[string]any `json:"config"`
}

// envelope is the message on the wire: the document's exact bytes and an
// Ed25519 signature over them (with ConfigPurpose or CommandPurpose).
type envelope struct {
	V   int             `json:"v"`
	Doc json.RawMessage `json:"doc,omitempty"`
	Cmd json.RawMessage `json:"cmd,omitempty"`
	Sig string          `json:"sig"`
}

// Signer signs msg for purpose: the operator's fleet key (*sign.Signer).
type Signer interface {
	Sign(purpose string, msg []byte) []byte
}

// Verifier verifies sig over msg for purpose with the pinned fleet keys
// (*sign.Verifier from fleet.keys_file).
type Verifier interface {
	Verify(purpose string, msg, sig []byte) error
}

// SignConfig encodes d and signs it: the payload to publish retained.
func SignConfig(d Doc, s Signer) ([]byte, error) {
	if d.Config == nil {
		d.Config = map[string]any{}
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode document: %w", err)
	}
	sig := s.Sign(ConfigPurpose, raw)
	return json.Marshal(envelope{V: WireVersion, Doc: raw, Sig: base64.StdEncoding.EncodeToString(sig)})
}

// OpenConfig verifies a config message and decodes its document. It does
// not check the level, the version or the keys.
func OpenConfig(payload []byte, v Verifier) (Doc, error) {
	var d Doc
	raw, err := open(payload, v, ConfigPurpose, func(e *envelope) json.RawMessage { return e.Doc })
	if err != nil {
		return d, err
	}
	if err := strictUnmarshal(raw, &d); err != nil {
		return d, fmt.Errorf("%w: document: %w", ErrMalformed, err)
	}
	if d.Config == nil {
		d.Config = map[string]any{}
	}
	return d, nil
}

// ParseUnverified decodes a config message without checking its signature
// (the operator tool's show, which only displays).
func ParseUnverified(payload []byte) (Doc, error) {
	var e envelope
	var d Doc
	if err := json.Unmarshal(payload, &e); err != nil {
		return d, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := json.Unmarshal(e.Doc, &d); err != nil {
		return d, fmt.Errorf("%w: document: %w", ErrMalformed, err)
	}
	return d, nil
}

func open(payload []byte, v Verifier, purpose string, part func(*envelope) json.RawMessage) (json.RawMessage, error) {
	var e envelope
	if err := json.Unmarshal(payload, &e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if e.V != WireVersion {
		return nil, fmt.Errorf("%w: wire version %d (this agent reads %d)", ErrMalformed, e.V, WireVersion)
	}
	raw := part(&e)
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: no document", ErrMalformed)
	}
	if e.Sig == "" {
		return nil, fmt.Errorf("%w: unsigned", ErrSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(e.Sig)
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64", ErrSignature)
	}
	if v == nil {
		return nil, fmt.Errorf("%w: no fleet keys (fleet.keys_file)", ErrSignature)
	}
	if err := v.Verify(purpose, raw, sig); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return raw, nil
}

func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	return dec.Decode(v)
}

// Allowed lists the keys a remote document may set, as dotted paths:
// sensors (with their intervals and deadbands), buffer limits, holds, the heartbeat
// interval, the log level and delivery tuning. Everything else (device id,
// broker URL and credentials, topic prefix, key files, paths, the fleet
// section) stays in the local file.
//
// sensor_interval and sensor_intervals exist only remotely: the first sets
// every sensor's interval, the second one sensor's by name (it wins over
// the first), so a fleet document changes the intervals of devices that
// have different sensors.
var Allowed = map[string]bool{
	"sensors":              true,
	"sensor_interval":      true,
	"sensor_intervals":     true,
	"buffer.max_bytes":     true,
	"buffer.max_age":       true,
	"clock.hold_unsynced":  true,
	"status_interval":      true,
	"log_level":            true,
	"mqtt.confirm_timeout": true,
	"mqtt.max_unconfirmed": true,
	"mqtt.max_inflight":    true,
}

// CheckKeys returns an error wrapping ErrLocalKey naming the first key of
// cfg (sorted) that Allowed does not list.
func CheckKeys(cfg map[string]any) error {
	var bad []string
	walkKeys(cfg, "", func(path string) { bad = append(bad, path) })
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("%w: %s (set it in the device's local config file)", ErrLocalKey, bad[0])
}

// walkKeys calls refuse for every key path that is not allowed: a mapping
// is descended into unless its own path is allowed.
func walkKeys(m map[string]any, prefix string, refuse func(string)) {
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if Allowed[p] {
			continue
		}
		sub, ok := v.(map[string]any)
		if !ok || !hasAllowedUnder(p) {
			refuse(p)
			continue
		}
		walkKeys(sub, p, refuse)
	}
}

func hasAllowedUnder(p string) bool {
	for k := range Allowed {
		if strings.HasPrefix(k, p+".") {
			return true
		}
	}
	return false
}
