package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("", env(base()))
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.TopicFilter != "sensors/+/+/reading" || c.Kafka.Topic != "sensor-readings" ||
		c.Kafka.DLQTopic != "sensor-readings.dlq" || c.Kafka.SecurityProtocol != SASLSSL || c.Listen != ":9102" ||
		!c.MQTT.TLS || c.MaxInFlight != 5000 || c.Kafka.BatchTimeout != 5*time.Millisecond ||
		c.ConfirmInterval != time.Second || c.MaxClockSkew != time.Hour {
		t.Fatalf("unexpected defaults: %+v", c)
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
		{"bad group", map[string]string{"FORWARDER_SHARE_GROUP": "a/b"}, "FORWARDER_SHARE_GROUP"},
		{"bad topic", map[string]string{"KAFKA_TOPIC": "a b"}, "KAFKA_TOPIC"},
		{"bad in flight", map[string]string{"FORWARDER_MAX_IN_FLIGHT": "0"}, "FORWARDER_MAX_IN_FLIGHT"},
		{"bad timeout", map[string]string{"KAFKA_BATCH_TIMEOUT": "soon"}, "KAFKA_BATCH_TIMEOUT"},
		{"bad insecure", map[string]string{"FORWARDER_INSECURE": "maybe"}, "FORWARDER_INSECURE"},
		{"missing ca", map[string]string{"KAFKA_CA_FILE": "/nonexistent/ca.pem"}, "KAFKA_CA_FILE"},
		{"both secret forms", map[string]string{"CONFLUENT_API_SECRET_FILE": "/etc/hostname"}, "CONFLUENT_API_SECRET"},
		{"bad compression", map[string]string{"KAFKA_COMPRESSION": "brotli"}, "KAFKA_COMPRESSION"},
		{"bad listen", map[string]string{"FORWARDER_LISTEN": "9102"}, "FORWARDER_LISTEN"},
		{"zero confirm interval", map[string]string{"FORWARDER_CONFIRM_INTERVAL": "0s"}, "FORWARDER_CONFIRM_INTERVAL"},
		{"long confirm interval", map[string]string{"FORWARDER_CONFIRM_INTERVAL": "2m"}, "FORWARDER_CONFIRM_INTERVAL"},
		{"bad clock skew", map[string]string{"FORWARDER_MAX_CLOCK_SKEW": "-1h"}, "FORWARDER_MAX_CLOCK_SKEW"},
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

func TestValid(t *testing.T) {
	tests := []struct {
		name string
		set  map[string]string
	}{
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
