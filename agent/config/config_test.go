package config_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/buffer/secret"
	"github.com/edgepipe/sensorpipe/drivers"
)

func noEnv(string) string { return "" }

func TestLoadFull(t *testing.T) {
	c, err := config.Load("testdata/full.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceID != "pi-greenhouse-1" || len(c.Sensors) != 4 {
		t.Fatalf("device %q, %d sensors", c.DeviceID, len(c.Sensors))
	}
	if c.Sensors[3].Interval != 10*time.Second {
		t.Errorf("default interval = %v, want 10s", c.Sensors[3].Interval)
	}
	if c.Sensors[0].Address != 0x76 {
		t.Errorf("address = %#x", c.Sensors[0].Address)
	}
	if c.Buffer.MaxBytes != 64<<20 || c.Buffer.MaxAge != 48*time.Hour {
		t.Errorf("buffer = %+v", c.Buffer)
	}
	if c.Clock.HoldUnsynced != 5*time.Minute {
		t.Errorf("clock.hold_unsynced = %v, want 5m", c.Clock.HoldUnsynced)
	}
	if c.StatusInterval != 2*time.Minute || len(c.Version()) != 12 {
		t.Errorf("status_interval = %v, version %q; want 2m and 12 hex digits", c.StatusInterval, c.Version())
	}
	if c.MQTT.Password.Reveal() != "hunter2-secret" {
		t.Errorf("password from file not read (trailing newline must be trimmed)")
	}
	if c.MQTT.MaxInflight != 2000 {
		t.Errorf("max_inflight default = %d", c.MQTT.MaxInflight)
	}
	if c.MQTT.Delivery != config.DeliveryKafka || c.MQTT.ConfirmTimeout != time.Minute || c.MQTT.MaxUnconfirmed != 10000 {
		t.Errorf("delivery defaults: %q, %v, %d; want kafka, 1m, 10000", c.MQTT.Delivery, c.MQTT.ConfirmTimeout, c.MQTT.MaxUnconfirmed)
	}
	if c.MQTT.KeepAlive != 30*time.Second || c.LogFormat != "json" || c.Path() != "testdata/full.yaml" {
		t.Errorf("keepalive %v, log_format %q, path %q", c.MQTT.KeepAlive, c.LogFormat, c.Path())
	}
}

func TestPasswordEnvWinsAndNeverPrints(t *testing.T) {
	env := func(k string) string {
		if k == config.PasswordEnv {
			return "from-env-secret"
		}
		return ""
	}
	c, err := config.Load("testdata/full.yaml", env)
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.Password.Reveal() != "from-env-secret" {
		t.Fatal("env password not used")
	}
	for _, s := range []string{fmt.Sprint(c.MQTT), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c.MQTT.Password.String())} {
		if strings.Contains(s, "from-env-secret") {
			t.Fatalf("password printed: %s", s)
		}
	}
}

const base = `device_id: pi-1
sensors:
  - {name: sim-1, driver: sim, interval: 1s}
mqtt:
  url: tcp://127.0.0.1:1883
`

// TestEveryKeyNamed checks that each kind of mistake is reported with the
// key a person has to fix.
func TestEveryKeyNamed(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, key string
	}{
		{"unknown top-level key", base + "devce_id: x\n", "devce_id"},
		{"unknown mqtt key", strings.Replace(base, "mqtt:\n", "mqtt:\n  usrname: x\n", 1), "yaml"},
		{"yaml syntax", base + "buffer: [\n", "yaml"},
		{"missing device_id", strings.Replace(base, "device_id: pi-1\n", "", 1), "device_id"},
		{"device_id with slash", strings.Replace(base, "pi-1", "pi/1", 1), "device_id"},
		{"device_id with plus", strings.Replace(base, "pi-1", "pi+1", 1), "device_id"},
		{"device_id with hash", strings.Replace(base, "pi-1", "'pi#1'", 1), "device_id"},
		{"device_id with dollar", strings.Replace(base, "pi-1", "$pi", 1), "device_id"},
		{"no sensors", "device_id: pi-1\nmqtt: {url: 'tcp://127.0.0.1:1883'}\n", "sensors"},
		{"sensor name wildcard", strings.Replace(base, "sim-1", "sim-#", 1), "sensors[0].name"},
		{"sensor name twice", strings.Replace(base, "mqtt:", "  - {name: sim-1, driver: sim}\nmqtt:", 1), ""},
		{"bad interval", strings.Replace(base, "interval: 1s", "interval: often", 1), "yaml"},
		{"interval too short", strings.Replace(base, "interval: 1s", "interval: 1ms", 1), "sensors[0].interval"},
		{"unknown driver", strings.Replace(base, "driver: sim", "driver: bmp9000", 1), "sensors[0]"},
		{"buffer path empty", base + "buffer: {path: ''}\n", "buffer.path"},
		{"buffer max_bytes garbage", base + "buffer: {max_bytes: lots}\n", "yaml"},
		{"buffer max_bytes small", base + "buffer: {max_bytes: 10KiB}\n", "buffer.max_bytes"},
		{"buffer max_age negative", base + "buffer: {max_age: -1h}\n", "buffer.max_age"},
		{"buffer when_full unknown", base + "buffer: {when_full: squeeze}\n", "buffer.when_full"},
		{"buffer when_full empty", base + "buffer: {when_full: ''}\n", "buffer.when_full"},
		{"clock hold_unsynced negative", base + "clock: {hold_unsynced: -1m}\n", "clock.hold_unsynced"},
		{"status_interval too short", base + "status_interval: 500ms\n", "status_interval"},
		{"mqtt url missing", "device_id: pi-1\nsensors: [{name: s, driver: sim}]\n", "mqtt.url"},
		{"mqtt url no host", strings.Replace(base, "tcp://127.0.0.1:1883", "ssl://", 1), "mqtt.url"},
		{"mqtt url scheme", strings.Replace(base, "tcp://127.0.0.1:1883", "http://example.com", 1), "mqtt.url"},
		{"mqtt plaintext remote", strings.Replace(base, "127.0.0.1", "broker.example.com", 1), "mqtt.url"},
		{"mqtt prefix bad", base + "  topic_prefix: a/b\n", "mqtt.topic_prefix"},
		{"mqtt username without password", base + "  username: u\n", "mqtt.password_file"},
		{"mqtt password file missing", base + "  password_file: testdata/nope\n", "mqtt.password_file"},
		{"mqtt ca file missing", base + "  ca_file: testdata/nope.pem\n", "mqtt.ca_file"},
		{"mqtt ca file not PEM", base + "  ca_file: testdata/not-a-ca.pem\n", "mqtt.ca_file"},
		{"mqtt ca file is the password", base + "  ca_file: testdata/password\n", "mqtt.ca_file"},
		{"mqtt keepalive short", base + "  keepalive: 100ms\n", "mqtt.keepalive"},
		{"mqtt max_inflight zero", base + "  max_inflight: 0\n", "mqtt.max_inflight"},
		{"mqtt max_inflight huge", base + "  max_inflight: 70000\n", "mqtt.max_inflight"},
		{"mqtt client_id bad", base + "  client_id: 'a b'\n", "mqtt.client_id"},
		{"mqtt delivery unknown", base + "  delivery: kafak\n", "mqtt.delivery"},
		{"mqtt confirm_timeout short", base + "  confirm_timeout: 100ms\n", "mqtt.confirm_timeout"},
		{"mqtt confirm_timeout garbage", base + "  confirm_timeout: soon\n", "yaml"},
		{"mqtt max_unconfirmed zero", base + "  max_unconfirmed: 0\n", "mqtt.max_unconfirmed"},
		{"mqtt max_unconfirmed huge", base + "  max_unconfirmed: 1000001\n", "mqtt.max_unconfirmed"},
		{"mqtt confirm_keys_file missing", base + "  confirm_keys_file: testdata/nope.pem\n", "mqtt.confirm_keys_file"},
		{"mqtt confirm_keys_file is a private key", base + "  confirm_keys_file: testdata/forwarder.key\n", "mqtt.confirm_keys_file"},
		{"mqtt confirm_keys_file not PEM", base + "  confirm_keys_file: testdata/password\n", "mqtt.confirm_keys_file"},
		{"mqtt confirm_unsigned with keys", base + "  confirm_keys_file: testdata/confirm-keys.pem\n  confirm_unsigned: true\n", "mqtt.confirm_unsigned"},
		{"status_listen bad", base + "status_listen: localhost\n", "status_listen"},
		{"log_format bad", base + "log_format: xml\n", "log_format"},
		{"log_level bad", base + "log_level: chatty\n", "yaml"},
		{"fleet group bad", base + "fleet: {group: a/b}\n", "fleet.group"},
		{"fleet grace short", base + "fleet: {grace: 500ms}\n", "fleet.grace"},
		{"fleet keys file missing", base + "fleet: {keys_file: testdata/nope.pem}\n", "fleet.keys_file"},
		{"fleet keys file not a key", base + "fleet: {keys_file: testdata/not-a-ca.pem}\n", "fleet.keys_file"},
		{"update deadline short", base + "update: {deadline: 5s}\n", "update.deadline"},
		{"update max_size small", base + "update: {max_size: 1KiB}\n", "update.max_size"},
		{"update keys file missing", base + "update: {keys_file: testdata/nope.pem}\n", "update.keys_file"},
		{"update keys file not a key", base + "update: {keys_file: testdata/not-a-ca.pem}\n", "update.keys_file"},
		{"update without fleet keys", base + "update: {keys_file: testdata/confirm-keys.pem}\n", "fleet.keys_file"},
		{"update without fleet group", base + "fleet: {keys_file: testdata/confirm-keys.pem}\nupdate: {keys_file: testdata/confirm-keys.pem}\n", "fleet.group"},
		{"update ca file not a CA", base + "fleet: {keys_file: testdata/confirm-keys.pem, group: g}\nupdate: {keys_file: testdata/confirm-keys.pem, ca_file: testdata/password}\n", "update.ca_file"},
		{"update dir relative", base + "fleet: {keys_file: testdata/confirm-keys.pem, group: g}\nupdate: {keys_file: testdata/confirm-keys.pem, dir: var/update}\n", "update.dir"},
		{"update unknown key", base + "update: {keyfile: x}\n", "yaml"},
		{"deadband negative", strings.Replace(base, "interval: 1s}", "interval: 1s, deadband: {temperature_c: -0.1}}", 1), "sensors[0].deadband.temperature_c"},
		{"deadband infinite", strings.Replace(base, "interval: 1s}", "interval: 1s, deadband: {temperature_c: 0.1, humidity_pct: .inf}}", 1), "yaml"},
		{"deadband bad value key", strings.Replace(base, "interval: 1s}", "interval: 1s, deadband: {'temp/c': 1}}", 1), "sensors[0].deadband.temp/c"},
		{"deadband a list", strings.Replace(base, "interval: 1s}", "interval: 1s, deadband: [temperature_c]}", 1), "yaml"},
		{"deadband amount with a unit", strings.Replace(base, "interval: 1s}", "interval: 1s, deadband: {temperature_c: 0.1C}}", 1), "yaml"},
		{"max_silence negative", strings.Replace(base, "interval: 1s}", "interval: 1s, deadband: {temperature_c: 0.1}, max_silence: -1m}", 1), "sensors[0].max_silence"},
		{"max_silence without deadband", strings.Replace(base, "interval: 1s}", "interval: 1s, max_silence: 1m}", 1), "sensors[0].max_silence"},
		{"max_silence not longer than interval", strings.Replace(base, "interval: 1s}", "interval: 1s, deadband: {temperature_c: 0.1}, max_silence: 1s}", 1), "sensors[0].max_silence"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yaml), noEnv)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("%v does not wrap ErrInvalid (exit code 2 depends on it)", err)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("%v is not a *config.Error", err)
			}
			want := tc.key
			if want == "" {
				want = "sensors[1].name"
			}
			if ce.Key != want {
				t.Fatalf("key = %q, want %q (error: %v)", ce.Key, want, err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("message %q does not name %q", err, want)
			}
		})
	}
}

// TestConfirmKeys: which configs accept unsigned confirmations, and which
// `config check` refuses (Strict) while run keeps them working.
func TestConfirmKeys(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mqtt     string
		unsigned bool   // AcceptsUnsigned
		strict   string // the key Strict names, "" for none
	}{
		{"old config, kafka by default", "", true, "mqtt.confirm_keys_file"},
		{"explicit unsigned", "  confirm_unsigned: true\n", true, ""},
		{"keys", "  confirm_keys_file: testdata/confirm-keys.pem\n", false, ""},
		{"broker delivery needs none", "  delivery: broker\n", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte(base+tc.mqtt), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.AcceptsUnsigned(); got != tc.unsigned {
				t.Errorf("AcceptsUnsigned = %t, want %t", got, tc.unsigned)
			}
			if (c.MQTT.ConfirmKeys != nil) != (c.MQTT.ConfirmKeysFile != "") {
				t.Errorf("keys file %q loaded %v", c.MQTT.ConfirmKeysFile, c.MQTT.ConfirmKeys)
			}
			err = c.Strict()
			var ce *config.Error
			switch {
			case tc.strict == "" && err != nil:
				t.Errorf("Strict = %v, want nil", err)
			case tc.strict != "" && (!errors.As(err, &ce) || ce.Key != tc.strict || !errors.Is(err, config.ErrInvalid)):
				t.Errorf("Strict = %v, want an error naming %s", err, tc.strict)
			}
		})
	}
	c, err := config.Parse([]byte(base+"  confirm_keys_file: testdata/confirm-keys.pem\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.ConfirmKeys.Len() != 1 {
		t.Fatalf("%d keys loaded, want 1", c.MQTT.ConfirmKeys.Len())
	}
}

func TestInsecureAllowsRemotePlaintext(t *testing.T) {
	y := strings.Replace(base, "127.0.0.1", "broker.lan", 1) + "  insecure: true\n"
	if _, err := config.Parse([]byte(y), noEnv); err != nil {
		t.Fatal(err)
	}
}

// TestEveryTLSSchemeAccepted: the config accepts every scheme the publisher
// and the forwarder treat as TLS (buffer/mqttconn decides; tcps:// was once
// refused here while both of them accepted it).
func TestEveryTLSSchemeAccepted(t *testing.T) {
	for _, scheme := range []string{"ssl", "tls", "mqtts", "tcps"} {
		y := strings.Replace(base, "tcp://127.0.0.1", scheme+"://broker.example.com", 1)
		if _, err := config.Parse([]byte(y), noEnv); err != nil {
			t.Errorf("%s: %v", scheme, err)
		}
	}
}

func TestLoadMissingFileIsAConfigError(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"), func(string) string { return "" })
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "--config" {
		t.Fatalf("Load(missing) = %v, want a config error naming --config", err)
	}
	if !errors.Is(err, config.ErrInvalid) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want it to match both config.ErrInvalid and fs.ErrNotExist", err)
	}
}

func TestURLWithCredentialsIsRefusedWithoutEchoingThem(t *testing.T) {
	for _, u := range []string{"ssl://user:hunter2@broker.example:8883", "ssl://us er:hunter2@%zz"} {
		yml := "device_id: d\nsensors: [{name: s, driver: sim}]\nmqtt: {url: \"" + u + "\"}\n"
		_, err := config.Parse([]byte(yml), func(string) string { return "" })
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "mqtt.url") {
			t.Fatalf("Parse(url %q) = %v, want an error naming mqtt.url", u, err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error echoes the password: %v", err)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := secret.Secret("hunter2")
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s)} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("secret printed: %s", out)
		}
	}
	b, _ := json.Marshal(struct{ P secret.Secret }{s})
	if strings.Contains(string(b), "hunter2") {
		t.Fatalf("secret in JSON: %s", b)
	}
}

// TestValidateChangesNothing: defaults are applied once, by Parse;
// Validate only reports (issue 10). A config whose interval or client id
// were never defaulted is reported, not silently fixed.
func TestValidateChangesNothing(t *testing.T) {
	c, err := config.Parse([]byte(base), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Sensors[0].Interval != time.Second || c.MQTT.ClientID != "pi-1" {
		t.Fatalf("Parse: interval %v, client id %q", c.Sensors[0].Interval, c.MQTT.ClientID)
	}
	raw := *c
	raw.Sensors = []drivers.Spec{{Name: "sim-1", Driver: "sim"}} // no interval
	raw.MQTT.ClientID = ""
	before := fmt.Sprintf("%#v", raw)
	err = raw.Validate()
	if after := fmt.Sprintf("%#v", raw); after != before {
		t.Fatalf("Validate changed the config:\nbefore %s\nafter  %s", before, after)
	}
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "sensors[0].interval" {
		t.Fatalf("Validate of a config without defaults = %v, want an error naming sensors[0].interval", err)
	}
	d := config.Default()
	if d.MQTT.KeepAlive != config.DefaultKeepAlive || d.Buffer.Path != config.DefaultBufferPath ||
		d.MQTT.Delivery != config.DefaultDelivery || d.StatusListen != config.DefaultStatusListen {
		t.Fatalf("Default() does not use the named defaults: %+v", d)
	}
}

// TestDeadbandParsed: a deadband and max_silence apply to any driver, and
// a deadband of the wrong shape is refused with a message naming it.
func TestDeadbandParsed(t *testing.T) {
	c, err := config.Load("testdata/full.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	ds := c.Sensors[2]
	if ds.Deadband["temperature_c"] != 0.1 || len(ds.Deadband) != 1 || ds.MaxSilence != 10*time.Minute {
		t.Errorf("ds18b20 deadband %v, max_silence %v; want {temperature_c: 0.1}, 10m", ds.Deadband, ds.MaxSilence)
	}
	bme := c.Sensors[0]
	if bme.Deadband["temperature_c"] != 0.1 || bme.Deadband["humidity_pct"] != 1 || bme.Deadband["pressure_hpa"] != 0 || bme.MaxSilence != 0 {
		t.Errorf("bme280 deadband %v, max_silence %v; want max_silence 0 (the default, 5m, is the filter's)", bme.Deadband, bme.MaxSilence)
	}
	if c.Sensors[1].Deadband != nil {
		t.Errorf("dht22 has no deadband in the file, got %v", c.Sensors[1].Deadband)
	}
	for _, tc := range []struct{ deadband, want string }{
		{"[temperature_c]", "deadband must be a mapping"},
		{"0.1", "deadband must be a mapping"},
		{"{temperature_c: 0.1C}", `deadband.temperature_c: "0.1C" is not a number`},
		{"{temperature_c: [1]}", "deadband.temperature_c"},
	} {
		y := strings.Replace(base, "interval: 1s}", "interval: 1s, deadband: "+tc.deadband+"}", 1)
		_, err := config.Parse([]byte(y), noEnv)
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("deadband: %s: Parse = %v, want ErrInvalid containing %q", tc.deadband, err, tc.want)
		}
	}
}

// TestI2CSensorKeysNamed: a mistake in a new I2C driver's entry is a
// config error (exit 2) naming the sensor and the field, down to the
// ADC channel.
func TestI2CSensorKeysNamed(t *testing.T) {
	for _, tc := range []struct{ sensor, want string }{
		{`{name: s, driver: ads1115, bus: "1", channels: [{input: "0"}, {input: "9"}]}`, `sensors[0]: channels[1].input "9"`},
		{`{name: s, driver: ads1115, bus: "1", channels: [{input: "0", scael: 2}]}`, "field scael not found"},
		{`{name: s, driver: ina219, bus: "1", shunt_ohms: -1}`, "sensors[0]: shunt_ohms -1"},
		{`{name: s, driver: bh1750, bus: "1", resolution: ultra}`, `sensors[0]: resolution "ultra"`},
		{`{name: s, driver: scd4x, bus: "1", interval: 1s}`, "sensors[0]: interval 1s is shorter than the scd4x's measurement period of 5s"},
		{`{name: s, driver: aht20, interval: 10s}`, "sensors[0]: bus is required for aht20"},
	} {
		y := strings.Replace(base, "{name: sim-1, driver: sim, interval: 1s}", tc.sensor, 1)
		_, err := config.Parse([]byte(y), noEnv)
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse = %v, want ErrInvalid containing %q", tc.sensor, err, tc.want)
		}
	}
}

func TestUpdateDefaults(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	body := "device_id: d\nsensors: [{name: s, driver: sim}]\nmqtt: {url: 'tcp://127.0.0.1:1883', delivery: broker}\n" +
		"buffer: {path: /data/agent/buffer.db}\nfleet: {keys_file: testdata/confirm-keys.pem, group: g}\n" +
		"update: {keys_file: testdata/confirm-keys.pem}\nfuture_key: 1\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// The launcher's lenient read ignores keys it does not know.
	u, udir, err := config.ReadUpdate(path)
	if err != nil {
		t.Fatal(err)
	}
	if udir != "/data/agent/update" || u.Deadline != config.DefaultUpdateDeadline || u.MaxSize != config.DefaultUpdateMaxSize ||
		u.KeysFile != "testdata/confirm-keys.pem" {
		t.Fatalf("ReadUpdate: %+v %s", u, udir)
	}
	c, err := config.Parse([]byte(strings.Replace(body, "future_key: 1\n", "", 1)), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.UpdateDir() != "/data/agent/update" || c.Update.Deadline != 2*time.Minute {
		t.Fatalf("update: %+v %s", c.Update, c.UpdateDir())
	}
}
