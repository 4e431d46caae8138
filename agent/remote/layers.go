package remote

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
)

// Merge layers the documents' configs in order: a later mapping overrides
// an earlier one key by key, descending into nested mappings; any other
// value (a list such as sensors, a number, a string) replaces the earlier
// one whole. The inputs are not changed.
func Merge(layers ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, l := range layers {
		mergeInto(out, l)
	}
	return out
}

func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			dm, ok := dst[k].(map[string]any)
			if !ok {
				dm = map[string]any{}
			}
			mergeInto(dm, sm)
			dst[k] = dm
			continue
		}
		dst[k] = v
	}
}

// Effective applies a merged remote config to the local one: the keys are
// checked against Allowed, decoded over a copy of local, the remote-only
// interval keys applied, and the result validated with the checks of
// `edge-agent config check`. local is not changed.
func Effective(local *config.Config, merged map[string]any) (*config.Config, error) {
	if err := CheckKeys(merged); err != nil {
		return nil, err
	}
	rest := map[string]any{}
	for k, v := range merged {
		if k != "sensor_interval" && k != "sensor_intervals" {
			rest[k] = v
		}
	}
	doc, err := json.Marshal(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	c, err := local.Overlay(doc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if v, ok := merged["sensor_interval"]; ok {
		d, err := duration("sensor_interval", v)
		if err != nil {
			return nil, err
		}
		for i := range c.Sensors {
			c.Sensors[i].Interval = d
		}
	}
	if v, ok := merged["sensor_intervals"]; ok {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: config: sensor_intervals: not a mapping of sensor name to interval", ErrInvalid)
		}
		for name, iv := range m {
			d, err := duration("sensor_intervals."+name, iv)
			if err != nil {
				return nil, err
			}
			i := sensorIndex(c, name)
			if i < 0 {
				return nil, fmt.Errorf("%w: config: sensor_intervals.%s: no sensor of that name on this device", ErrInvalid, name)
			}
			c.Sensors[i].Interval = d
		}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c, nil
}

func sensorIndex(c *config.Config, name string) int {
	for i, s := range c.Sensors {
		if s.Name == name {
			return i
		}
	}
	return -1
}

func duration(key string, v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("%w: config: %s: %v is not a duration like 5s", ErrInvalid, key, v)
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%w: config: %s: %q is not a duration like 5s", ErrInvalid, key, s)
	}
	return d, nil
}
