package remote_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/remote"
)

func obj(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMergeKeyByKey(t *testing.T) {
	tests := []struct {
		name   string
		layers []string
		want   string
	}{
		{"empty", nil, `{}`},
		{"one level", []string{`{"log_level":"debug"}`}, `{"log_level":"debug"}`},
		{"later wins", []string{`{"log_level":"debug"}`, `{"log_level":"warn"}`}, `{"log_level":"warn"}`},
		{"nested keys merge", []string{`{"buffer":{"max_bytes":"64MiB","max_age":"24h"}}`, `{"buffer":{"max_age":"48h"}}`},
			`{"buffer":{"max_bytes":"64MiB","max_age":"48h"}}`},
		{"fleet group device", []string{`{"sensor_interval":"5s","log_level":"info"}`, `{"sensor_intervals":{"sim-2":"3s"}}`, `{"log_level":"debug"}`},
			`{"sensor_interval":"5s","sensor_intervals":{"sim-2":"3s"},"log_level":"debug"}`},
		{"lists replace whole", []string{`{"sensors":[{"name":"a"},{"name":"b"}]}`, `{"sensors":[{"name":"c"}]}`}, `{"sensors":[{"name":"c"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var layers []map[string]any
			for _, l := range tt.layers {
				layers = append(layers, obj(t, l))
			}
			got := remote.Merge(layers...)
			if want := obj(t, tt.want); !reflect.DeepEqual(got, want) {
				t.Fatalf("Merge = %v, want %v", got, want)
			}
		})
	}
}

func TestMergeLeavesInputs(t *testing.T) {
	a, b := obj(t, `{"buffer":{"max_age":"24h"}}`), obj(t, `{"buffer":{"max_bytes":"2MiB"}}`)
	remote.Merge(a, b)
	if len(a["buffer"].(map[string]any)) != 1 {
		t.Fatalf("Merge changed its input: %v", a)
	}
}

func TestEffective(t *testing.T) {
	local := localConfig(t)
	c, err := remote.Effective(local, obj(t, `{"sensor_interval":"5s","sensor_intervals":{"sim-2":"3s"},
		"buffer":{"max_bytes":"64MiB"},"clock":{"hold_unsynced":"1m"},"log_level":"debug",
		"mqtt":{"confirm_timeout":"30s","max_unconfirmed":500,"max_inflight":100}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Sensors[0].Interval != 5*time.Second || c.Sensors[1].Interval != 3*time.Second {
		t.Errorf("intervals = %v, %v; want 5s, 3s", c.Sensors[0].Interval, c.Sensors[1].Interval)
	}
	if c.Buffer.MaxBytes != 64<<20 || c.Buffer.MaxAge != local.Buffer.MaxAge || c.Buffer.Path != local.Buffer.Path {
		t.Errorf("buffer = %+v", c.Buffer)
	}
	if c.MQTT.ConfirmTimeout != 30*time.Second || c.MQTT.MaxUnconfirmed != 500 || c.MQTT.MaxInflight != 100 || c.MQTT.URL != local.MQTT.URL {
		t.Errorf("mqtt = %+v", c.MQTT)
	}
	if c.Clock.HoldUnsynced != time.Minute || c.LogLevel.String() != "DEBUG" {
		t.Errorf("clock %v, log level %v", c.Clock.HoldUnsynced, c.LogLevel)
	}
	if local.Sensors[0].Interval != time.Second || local.Buffer.MaxBytes == 64<<20 {
		t.Error("Effective changed the local config")
	}

	c, err = remote.Effective(local, obj(t, `{"sensors":[{"name":"sim-9","driver":"sim"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sensors) != 1 || c.Sensors[0].Name != "sim-9" || c.Sensors[0].Interval != 10*time.Second {
		t.Errorf("sensors replaced = %+v, want sim-9 with the default interval", c.Sensors)
	}

	// A sensor's deadband and max_silence ride in its sensors entry, so
	// they change remotely wherever the sensors list does.
	c, err = remote.Effective(local, obj(t, `{"sensors":[{"name":"sim-1","driver":"sim","interval":"1s",
		"deadband":{"temperature_c":0.1,"humidity_pct":1},"max_silence":"2m"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Sensors[0]; s.Deadband["temperature_c"] != 0.1 || s.Deadband["humidity_pct"] != 1 || s.MaxSilence != 2*time.Minute {
		t.Errorf("remote deadband = %v, max_silence %v", s.Deadband, s.MaxSilence)
	}
	if local.Sensors[0].Deadband != nil {
		t.Error("Effective changed the local config's deadband")
	}
}

func TestEffectiveRefuses(t *testing.T) {
	tests := []struct {
		name, cfg string
		want      error
	}{
		{"device id", `{"device_id":"pi-2"}`, remote.ErrLocalKey},
		{"broker url", `{"mqtt":{"url":"tcp://evil:1883"}}`, remote.ErrLocalKey},
		{"credentials", `{"mqtt":{"password_file":"/tmp/x"}}`, remote.ErrLocalKey},
		{"username", `{"mqtt":{"username":"x"}}`, remote.ErrLocalKey},
		{"topic prefix", `{"mqtt":{"topic_prefix":"x"}}`, remote.ErrLocalKey},
		{"delivery mode", `{"mqtt":{"delivery":"broker"}}`, remote.ErrLocalKey},
		{"fleet keys", `{"fleet":{"keys_file":"/tmp/k.pem"}}`, remote.ErrLocalKey},
		{"fleet group", `{"fleet":{"group":"other"}}`, remote.ErrLocalKey},
		{"buffer path", `{"buffer":{"path":"/tmp/b.db"}}`, remote.ErrLocalKey},
		{"status listen", `{"status_listen":"0.0.0.0:9101"}`, remote.ErrLocalKey},
		{"sysfs root", `{"sysfs_root":"/"}`, remote.ErrLocalKey},
		{"mqtt whole", `{"mqtt":"x"}`, remote.ErrLocalKey},
		{"unknown", `{"bogus":1}`, remote.ErrLocalKey},
		{"interval too short", `{"sensor_interval":"1ms"}`, remote.ErrInvalid},
		{"interval not a duration", `{"sensor_interval":5}`, remote.ErrInvalid},
		{"unknown sensor", `{"sensor_intervals":{"nope":"5s"}}`, remote.ErrInvalid},
		{"buffer too small", `{"buffer":{"max_bytes":"10KiB"}}`, remote.ErrInvalid},
		{"no sensors", `{"sensors":[]}`, remote.ErrInvalid},
		{"bad driver", `{"sensors":[{"name":"x","driver":"nope"}]}`, remote.ErrInvalid},
		{"unknown sensor key", `{"sensors":[{"name":"x","driver":"sim","pin":4}]}`, remote.ErrInvalid},
		{"max_unconfirmed", `{"mqtt":{"max_unconfirmed":0}}`, remote.ErrInvalid},
		{"deadband negative", `{"sensors":[{"name":"x","driver":"sim","deadband":{"temperature_c":-1}}]}`, remote.ErrInvalid},
		{"deadband not a mapping", `{"sensors":[{"name":"x","driver":"sim","deadband":["temperature_c"]}]}`, remote.ErrInvalid},
		{"max_silence without deadband", `{"sensors":[{"name":"x","driver":"sim","max_silence":"1m"}]}`, remote.ErrInvalid},
		{"log level", `{"log_level":"loud"}`, remote.ErrInvalid},
	}
	local := localConfig(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := remote.Effective(local, obj(t, tt.cfg))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}
