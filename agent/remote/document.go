package remote

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/sign/envelope"
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

// Signer signs msg for purpose: the operator's fleet key (*sign.Signer).
type Signer = envelope.Signer

// Verifier verifies sig over msg for purpose with the pinned fleet keys
// (*sign.Verifier from fleet.keys_file).
type Verifier = envelope.Verifier

// The parts of the envelopes (buffer/sign/envelope) that carry a config
// document and a command.
const (
	partDoc = "doc"
	partCmd = "cmd"
)

// SignConfig encodes d and signs it: the payload to publish retained.
func SignConfig(d Doc, s Signer) ([]byte, error) {
	if d.Config == nil {
		d.Config = map[string]any{}
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode document: %w", err)
	}
	return envelope.Seal(partDoc, raw, ConfigPurpose, s)
}

// OpenConfig verifies a config message and decodes its document. It does
// not check the level, the version or the keys.
func OpenConfig(payload []byte, v Verifier) (Doc, error) {
	var d Doc
	raw, err := open(payload, v, partDoc, ConfigPurpose)
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
	var d Doc
	raw, err := envelope.Unverified(payload, partDoc)
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return d, fmt.Errorf("%w: document: %w", ErrMalformed, err)
	}
	return d, nil
}

// open verifies a fleet-signed envelope and returns its part.
func open(payload []byte, v Verifier, part, purpose string) (json.RawMessage, error) {
	if v == nil {
		if _, err := envelope.Unverified(payload, part); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: no fleet keys (fleet.keys_file)", ErrSignature)
	}
	return envelope.Open(payload, part, purpose, v)
}

func strictUnmarshal(raw []byte, v any) error { return envelope.DecodeStrict(raw, v) }

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
	"buffer.when_full":     true,
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
