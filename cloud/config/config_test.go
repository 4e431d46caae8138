package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/sign"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func base() map[string]string {
	return map[string]string{
		"HIVEMQ_URL":                      "ssl://broker.example.com:8883",
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": "pkc.confluent.cloud:9092",
		"CONFLUENT_API_KEY":               "KEY",
		"CONFLUENT_API_SECRET":            "s3cret",
		"FORWARDER_ID":                    "fwd-1",
		"FORWARDER_CONFIRM_KEY_FILE":      "testdata/confirm.key", // openssl genpkey -algorithm ed25519
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("", env(base()))
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.TopicFilter != "sensors/+/+/reading" || c.Kafka.Topic != "sensor-readings" ||
		c.Kafka.DLQTopic != "sensor-readings.dlq" || c.Kafka.SecurityProtocol != SASLSSL || c.Listen != ":9102" ||
		!c.MQTT.TLS || c.MaxInFlight != 3500 || c.Kafka.BatchTimeout != 5*time.Millisecond ||
		c.ConfirmInterval != time.Second || c.MaxClockSkew != time.Hour || !c.Confirm {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

// TestStatusFilter: the heartbeats are read under the readings' prefix
// (and device, when the filter names one), as the agent publishes them.
func TestStatusFilter(t *testing.T) {
	for _, tc := range []struct{ readings, status, topic, want string }{
		{"sensors/+/+/reading", "", "", "sensors/+/status"},
		{"site/a/+/+/reading", "", "", "site/a/+/status"},
		{"sensors/pi-1/+/reading", "", "", "sensors/pi-1/status"},
		{"sensors/+/bme280-0x76/reading", "", "", "sensors/+/status"},
		{"sensors/#", "", "", ""},        // covered by the readings' filter
		{"sensors/+/+/+", "off", "", ""}, // relay off: no filter needed
		{"sensors/+/+/reading", "fleet-hb", "fleet-hb", "sensors/+/status"},
	} {
		e := base()
		e["MQTT_TOPIC_FILTER"], e["KAFKA_STATUS_TOPIC"] = tc.readings, tc.status
		c, err := Load("", env(e))
		if err != nil {
			t.Fatalf("%s: %v", tc.readings, err)
		}
		wantTopic := tc.topic
		if tc.status == "" {
			wantTopic = DefaultStatusTopic
		} else if tc.status == StatusOff {
			wantTopic = ""
		}
		if c.MQTT.StatusFilter != tc.want || c.Kafka.StatusTopic != wantTopic {
			t.Errorf("%s, KAFKA_STATUS_TOPIC=%q: filter %q topic %q, want %q %q", tc.readings, tc.status,
				c.MQTT.StatusFilter, c.Kafka.StatusTopic, tc.want, wantTopic)
		}
	}
}

func TestConfirmSwitch(t *testing.T) {
	for _, tc := range []struct {
		val  string
		want bool
	}{{"", true}, {"true", true}, {"false", false}, {"0", false}} {
		e := base()
		e["FORWARDER_CONFIRM"] = tc.val
		c, err := Load("", env(e))
		if err != nil {
			t.Fatal(err)
		}
		if c.Confirm != tc.want {
			t.Errorf("FORWARDER_CONFIRM=%q: Confirm = %t, want %t", tc.val, c.Confirm, tc.want)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c, err := Load("", env(base()))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{c.Kafka.APISecret.String(), strings.Join([]string{string(must(c.Kafka.APISecret.MarshalText()))}, "")} {
		if strings.Contains(s, "s3cret") {
			t.Fatalf("secret leaked: %s", s)
		}
	}
	if c.Kafka.APISecret.Reveal() != "s3cret" {
		t.Fatal("Reveal lost the secret")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name    string
		set     map[string]string
		wantKey string
	}{
		{"missing url", map[string]string{"HIVEMQ_URL": ""}, "HIVEMQ_URL"},
		{"plain remote mqtt", map[string]string{"HIVEMQ_URL": "tcp://broker.example.com:1883"}, "HIVEMQ_URL"},
		{"bad scheme", map[string]string{"HIVEMQ_URL": "http://x:1"}, "HIVEMQ_URL"},
		{"no port", map[string]string{"HIVEMQ_URL": "ssl://x"}, "HIVEMQ_URL"},
		{"missing bootstrap", map[string]string{"CONFLUENT_BOOTSTRAP_SERVER_SASL": ""}, "CONFLUENT_BOOTSTRAP_SERVER_SASL"},
		{"bad bootstrap", map[string]string{"CONFLUENT_BOOTSTRAP_SERVER_SASL": "nohost"}, "CONFLUENT_BOOTSTRAP_SERVER_SASL"},
		{"missing key", map[string]string{"CONFLUENT_API_KEY": ""}, "CONFLUENT_API_KEY"},
		{"missing secret", map[string]string{"CONFLUENT_API_SECRET": ""}, "CONFLUENT_API_SECRET"},
		{"plaintext remote kafka", map[string]string{"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "KAFKA_SECURITY_PROTOCOL"},
		{"unknown protocol", map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "KAFKA_SECURITY_PROTOCOL"},
		{"bad filter", map[string]string{"MQTT_TOPIC_FILTER": "sensors/#/x"}, "MQTT_TOPIC_FILTER"},
		{"share in filter", map[string]string{"MQTT_TOPIC_FILTER": "$share/g/sensors/#"}, "MQTT_TOPIC_FILTER"},
		{"no status filter", map[string]string{"MQTT_TOPIC_FILTER": "sensors/+/+/+"}, "KAFKA_STATUS_TOPIC"},
		{"bad group", map[string]string{"FORWARDER_SHARE_GROUP": "a/b"}, "FORWARDER_SHARE_GROUP"},
		{"bad topic", map[string]string{"KAFKA_TOPIC": "a b"}, "KAFKA_TOPIC"},
		{"bad in flight", map[string]string{"FORWARDER_MAX_IN_FLIGHT": "0"}, "FORWARDER_MAX_IN_FLIGHT"},
		{"bad timeout", map[string]string{"KAFKA_BATCH_TIMEOUT": "soon"}, "KAFKA_BATCH_TIMEOUT"},
		{"long linger", map[string]string{"KAFKA_BATCH_TIMEOUT": "2s"}, "KAFKA_BATCH_TIMEOUT"},
		{"negative linger", map[string]string{"KAFKA_BATCH_TIMEOUT": "-1ms"}, "KAFKA_BATCH_TIMEOUT"},
		{"retired batch size", map[string]string{"KAFKA_BATCH_SIZE": "10000"}, "KAFKA_BATCH_SIZE"},
		{"retired max requests", map[string]string{"KAFKA_MAX_REQUESTS": "8"}, "KAFKA_MAX_REQUESTS"},
		{"bad insecure", map[string]string{"FORWARDER_INSECURE": "maybe"}, "FORWARDER_INSECURE"},
		{"missing ca", map[string]string{"KAFKA_CA_FILE": "/nonexistent/ca.pem"}, "KAFKA_CA_FILE"},
		{"both secret forms", map[string]string{"CONFLUENT_API_SECRET_FILE": "/etc/hostname"}, "CONFLUENT_API_SECRET"},
		{"bad compression", map[string]string{"KAFKA_COMPRESSION": "brotli"}, "KAFKA_COMPRESSION"},
		{"bad listen", map[string]string{"FORWARDER_LISTEN": "9102"}, "FORWARDER_LISTEN"},
		{"zero confirm interval", map[string]string{"FORWARDER_CONFIRM_INTERVAL": "0s"}, "FORWARDER_CONFIRM_INTERVAL"},
		{"long confirm interval", map[string]string{"FORWARDER_CONFIRM_INTERVAL": "2m"}, "FORWARDER_CONFIRM_INTERVAL"},
		{"bad clock skew", map[string]string{"FORWARDER_MAX_CLOCK_SKEW": "-1h"}, "FORWARDER_MAX_CLOCK_SKEW"},
		{"bad confirm", map[string]string{"FORWARDER_CONFIRM": "sometimes"}, "FORWARDER_CONFIRM"},
		{"missing confirm key", map[string]string{"FORWARDER_CONFIRM_KEY_FILE": "/nonexistent/confirm.key"}, "FORWARDER_CONFIRM_KEY_FILE"},
		{"public key as confirm key", map[string]string{"FORWARDER_CONFIRM_KEY_FILE": "testdata/confirm.pub"}, "FORWARDER_CONFIRM_KEY_FILE"},
		{"certificate as confirm key", map[string]string{"FORWARDER_CONFIRM_KEY_FILE": "testdata/not-pem.crt"}, "FORWARDER_CONFIRM_KEY_FILE"},
		// Credentials in URLs are refused without being echoed (the test checks every error for s3cret).
		{"url credentials, no port", map[string]string{"HIVEMQ_URL": "ssl://fwd:s3cret@broker.example.com"}, "HIVEMQ_URL"},
		{"url credentials, bad port", map[string]string{"HIVEMQ_URL": "ssl://fwd:s3cret@broker.example.com:x"}, "HIVEMQ_URL"},
		{"url credentials, bad scheme", map[string]string{"HIVEMQ_URL": "https://fwd:s3cret@broker.example.com:443"}, "HIVEMQ_URL"},
		{"url user only", map[string]string{"HIVEMQ_URL": "ssl://s3cret@broker.example.com:8883"}, "HIVEMQ_URL"},
		{"bootstrap credentials", map[string]string{"CONFLUENT_BOOTSTRAP_SERVER_SASL": "key:s3cret@pkc.example.com:9092"}, "CONFLUENT_BOOTSTRAP_SERVER_SASL"},
		{"bootstrap url credentials", map[string]string{"CONFLUENT_BOOTSTRAP_SERVER_SASL": "SASL_SSL://key:s3cret@pkc.example.com:9092"}, "CONFLUENT_BOOTSTRAP_SERVER_SASL"},
		{"second bootstrap credentials", map[string]string{"CONFLUENT_BOOTSTRAP_SERVER_SASL": "a.example.com:9092,key:s3cret@b.example.com:9092"}, "CONFLUENT_BOOTSTRAP_SERVER_SASL"},
		// A CA file must hold PEM certificates: config check, not a restart loop in run.
		{"mqtt ca not pem", map[string]string{"HIVEMQ_CA_FILE": "testdata/not-pem.crt"}, "HIVEMQ_CA_FILE"},
		{"kafka ca not pem", map[string]string{"KAFKA_CA_FILE": "testdata/not-pem.crt"}, "KAFKA_CA_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			for k, v := range tt.set {
				m[k] = v
			}
			_, err := Load("", env(m))
			var ce *Error
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want *Error wrapping ErrInvalid", err)
			}
			if ce.Key != tt.wantKey {
				t.Fatalf("error names %q, want %q (%v)", ce.Key, tt.wantKey, err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

// TestRetiredSettings: the settings of the hand-written producer are
// refused with an error that names what replaced them, except the one
// value that still holds (KAFKA_MAX_REQUESTS=5).
func TestRetiredSettings(t *testing.T) {
	for _, tt := range []struct {
		key, val, want string
	}{
		{"KAFKA_BATCH_SIZE", "200", "KAFKA_BATCH_BYTES"},
		{"KAFKA_MAX_REQUESTS", "1", "5 requests in flight per broker"},
		{"KAFKA_MAX_REQUESTS", "5", ""},
	} {
		m := base()
		m[tt.key] = tt.val
		_, err := Load("", env(m))
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s=%s: %v", tt.key, tt.val, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), tt.key+":") {
			t.Errorf("%s=%s: err %v, want one naming %s and %q", tt.key, tt.val, err, tt.key, tt.want)
		}
	}
}

func TestValid(t *testing.T) {
	tests := []struct {
		name string
		set  map[string]string
	}{
		{"no linger", map[string]string{"KAFKA_BATCH_TIMEOUT": "0s"}},
		{"plain loopback", map[string]string{"HIVEMQ_URL": "tcp://127.0.0.1:1883", "KAFKA_SECURITY_PROTOCOL": "plaintext",
			"CONFLUENT_BOOTSTRAP_SERVER_SASL": "localhost:9092,127.0.0.1:9093"}},
		{"plain insecure", map[string]string{"HIVEMQ_URL": "tcp://mqtt.lan:1883", "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
			"CONFLUENT_BOOTSTRAP_SERVER_SASL": "kafka.lan:9092", "FORWARDER_INSECURE": "true"}},
		{"ssl without sasl", map[string]string{"KAFKA_SECURITY_PROTOCOL": "SSL", "CONFLUENT_API_KEY": "", "CONFLUENT_API_SECRET": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			for k, v := range tt.set {
				m[k] = v
			}
			if _, err := Load("", env(m)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFileAndEnvOverride(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load("testdata/forwarder.yaml", env(map[string]string{
		"CONFLUENT_API_SECRET_FILE": secretFile,
		"FORWARDER_ID":              "from-env",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "from-env" || c.MaxInFlight != 500 || c.Kafka.BatchTimeout != 10*time.Millisecond ||
		c.Kafka.APISecret.Reveal() != "from-file" || c.MQTT.Username != "fwd" {
		t.Fatalf("file/env merge wrong: %+v", c)
	}
	_, err = Load("testdata/unknown.yaml", env(nil))
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "kafka_topicz" {
		t.Fatalf("unknown key: got %v", err)
	}
}

func TestLoadKafkaNeedsNoMQTT(t *testing.T) {
	m := base()
	delete(m, "HIVEMQ_URL")
	k, err := LoadKafka("", env(m))
	if err != nil {
		t.Fatal(err)
	}
	if k.Topic != "sensor-readings" || len(k.Bootstrap) != 1 {
		t.Fatalf("got %+v", k)
	}
}

// TestYAMLScalarsAreText: an unquoted 007 in the YAML file is the password
// "007", not the number 7 (nor 0x1F 31, nor 1e3 1000).
func TestYAMLScalarsAreText(t *testing.T) {
	c, err := Load("testdata/scalars.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{c.MQTT.Username, c.MQTT.Password.Reveal(), c.Kafka.APIKey, c.Kafka.APISecret.Reveal(), c.ID}
	want := []string{"1234", "007", "0x1F", "1e3", "00042"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("scalars read as %q, want %q", got, want)
	}
	if c.MaxInFlight != 500 {
		t.Fatalf("forwarder_max_in_flight: 0500 read as %d", c.MaxInFlight)
	}
}

// TestForwarderID: without FORWARDER_ID the host name is used, and said so;
// in a container, whose host name changes with every container (stranding
// the broker's persistent session under the old one), it is required.
func TestForwarderID(t *testing.T) {
	tests := []struct {
		name      string
		id        string
		container bool
		wantID    string
		wantFrom  string
		wantErr   bool
	}{
		{"set", "fwd-7", false, "fwd-7", "FORWARDER_ID", false},
		{"set in a container", "fwd-7", true, "fwd-7", "FORWARDER_ID", false},
		{"host name", "", false, "host-1", "host name (FORWARDER_ID not set)", false},
		{"container without id", "", true, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			m["FORWARDER_ID"] = tt.id
			c, err := load("", env(m), system{
				inContainer: func() bool { return tt.container },
				hostname:    func() (string, error) { return "host-1", nil },
			})
			if tt.wantErr {
				var ce *Error
				if !errors.As(err, &ce) || ce.Key != "FORWARDER_ID" || !strings.Contains(err.Error(), "container") {
					t.Fatalf("got %v, want an error naming FORWARDER_ID and the container", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ID != tt.wantID || c.IDFrom != tt.wantFrom {
				t.Fatalf("id %q from %q, want %q from %q", c.ID, c.IDFrom, tt.wantID, tt.wantFrom)
			}
		})
	}
}

// TestConfirmKey: the key is loaded at Load, and signs what the matching
// public key verifies; without one, confirmations are unsigned and
// Warnings says so.
func TestConfirmKey(t *testing.T) {
	c, err := Load("", env(base()))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sign.LoadVerifier("testdata/confirm.pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Verify("sensorpipe test", []byte("m"), c.ConfirmKey.Sign("sensorpipe test", []byte("m"))); err != nil {
		t.Fatalf("the loaded key does not match confirm.pub: %v", err)
	}
	if ws := c.Warnings(); len(ws) != 0 {
		t.Fatalf("warnings with a key: %q", ws)
	}
	for _, tc := range []struct {
		confirm string
		warn    bool
	}{{"true", true}, {"false", false}} {
		e := base()
		delete(e, "FORWARDER_CONFIRM_KEY_FILE")
		e["FORWARDER_CONFIRM"] = tc.confirm
		c, err := Load("", env(e))
		if err != nil {
			t.Fatal(err)
		}
		ws := c.Warnings()
		if c.ConfirmKey != nil || (len(ws) == 1) != tc.warn || (tc.warn && !strings.Contains(ws[0], "FORWARDER_CONFIRM_KEY_FILE is not set")) {
			t.Errorf("FORWARDER_CONFIRM=%s without a key: key %v, warnings %q", tc.confirm, c.ConfirmKey, ws)
		}
	}
}

// TestPlaintextWarnings: plaintext to a host that is not loopback (allowed
// by FORWARDER_INSECURE) is reported, so run can say so at start.
func TestPlaintextWarnings(t *testing.T) {
	tests := []struct {
		name string
		set  map[string]string
		want []string
	}{
		{"tls", nil, nil},
		{"loopback", map[string]string{"HIVEMQ_URL": "tcp://127.0.0.1:1883", "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
			"CONFLUENT_BOOTSTRAP_SERVER_SASL": "localhost:9092"}, nil},
		{"remote", map[string]string{"HIVEMQ_URL": "tcp://mqtt.lan:1883", "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
			"CONFLUENT_BOOTSTRAP_SERVER_SASL": "127.0.0.1:9092,kafka.lan:9092", "FORWARDER_INSECURE": "true"},
			[]string{"HIVEMQ_URL", "KAFKA_SECURITY_PROTOCOL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			for k, v := range tt.set {
				m[k] = v
			}
			c, err := Load("", env(m))
			if err != nil {
				t.Fatal(err)
			}
			ws := c.Warnings()
			if len(ws) != len(tt.want) {
				t.Fatalf("warnings %q, want ones about %v", ws, tt.want)
			}
			for i, w := range ws {
				if !strings.Contains(w, tt.want[i]) || !strings.Contains(w, "plaintext") {
					t.Errorf("warning %q, want one about plaintext and %s", w, tt.want[i])
				}
			}
		})
	}
}

// TestLoginWarning: a FORWARDER_ID other than the broker login is
// reported (the shipped broker set-ups refuse it); no login, no warning.
func TestLoginWarning(t *testing.T) {
	for _, tt := range []struct {
		user string
		warn bool
	}{{"", false}, {"fwd-1", false}, {"forwarder", true}} {
		m := base()
		m["HIVEMQ_USERNAME"] = tt.user
		c, err := Load("", env(m))
		if err != nil {
			t.Fatal(err)
		}
		ws := c.Warnings()
		if got := len(ws) == 1 && strings.Contains(ws[0], "FORWARDER_ID") && strings.Contains(ws[0], "HIVEMQ_USERNAME"); got != tt.warn || len(ws) > 1 {
			t.Errorf("HIVEMQ_USERNAME %q: warnings %q, want a FORWARDER_ID one: %v", tt.user, ws, tt.warn)
		}
	}
}

// TestDefaultsFromTable: what --help shows as a default is what the parser
// uses. Setting every variable to the Default its table row shows changes
// nothing, and every variable the parser reads has a row (defaultOf panics
// otherwise).
func TestDefaultsFromTable(t *testing.T) {
	plain, err := Load("", env(base()))
	if err != nil {
		t.Fatal(err)
	}
	explicit := base()
	for _, v := range Vars {
		if v.Default != "" {
			explicit[v.Name] = v.Default
		}
	}
	c, err := Load("", env(explicit))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(plain, c) {
		t.Fatalf("defaults differ from the table:\n%+v\n%+v", plain, c)
	}

	sinkBase := base()
	sinkBase["DATABASE_URL"] = "postgres://sink@localhost/readings"
	plainSink, err := LoadSink("", env(sinkBase))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range allVars() {
		if v.Default != "" {
			sinkBase[v.Name] = v.Default
		}
	}
	s, err := LoadSink("", env(sinkBase))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(plainSink, s) {
		t.Fatalf("sink defaults differ from the table:\n%+v\n%+v", plainSink, s)
	}
}
