package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func sinkBase() map[string]string {
	return map[string]string{
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": "pkc.confluent.cloud:9092",
		"CONFLUENT_API_KEY":               "KEY",
		"CONFLUENT_API_SECRET":            "s3cret",
		"DATABASE_URL":                    "postgres://sink:pw-xyzzy@db.example.com:5432/sensors?sslmode=verify-full",
	}
}

func TestSinkDefaults(t *testing.T) {
	s, err := LoadSink("", env(sinkBase()))
	if err != nil {
		t.Fatal(err)
	}
	if s.Group != "sensorpipe-sink" || s.Listen != ":9103" || s.Retention != 0 || s.BatchSize != 5000 ||
		s.Kafka.Topic != "sensor-readings" || s.Kafka.SecurityProtocol != SASLSSL || s.LogLevel != "info" {
		t.Fatalf("unexpected defaults: %+v", s)
	}
	if strings.Contains(s.DatabaseURL.String(), "pw-xyzzy") {
		t.Fatal("DATABASE_URL prints its password")
	}
}

func TestSinkRetention(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"keep", 0}, {"0", 0}, {"720h", 720 * time.Hour}, {"90d", 90 * 24 * time.Hour}, {"1h30m", 90 * time.Minute},
	}
	for _, tc := range tests {
		e := sinkBase()
		e["SINK_RETENTION"] = tc.in
		s, err := LoadSink("", env(e))
		if err != nil || s.Retention != tc.want {
			t.Errorf("SINK_RETENTION=%s: %v, %v; want %v", tc.in, s, err, tc.want)
		}
	}
}

func TestSinkDatabaseURL(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"postgres://u:p@db.example.com/sensors?sslmode=verify-full", true},
		{"postgresql://u:p@db.example.com:6543/sensors?sslmode=verify-full&sslrootcert=testdata/forwarder.yaml", false}, // not a PEM file
		{"postgres://u:p@db.example.com/sensors", false},
		{"postgres://u:p@db.example.com/sensors?sslmode=require", false},
		{"postgres://u:p@db.example.com/sensors?sslmode=verify-ca", false},
		{"postgres://u:p@db.example.com/sensors?sslmode=disable", false},
		{"postgres://u:p@127.0.0.1:5432/sensors?sslmode=disable", true},
		{"postgres://u:p@localhost/sensors", true},
		{"postgres://u:p@[::1]:5432/sensors?sslmode=disable", true},
		{"postgres://u@/sensors?host=/var/run/postgresql", true},
		{"postgres:///sensors", true},
		{"postgres://u:p@127.0.0.1,db.example.com/sensors?sslmode=require", false},
		{"postgres://u:p@127.0.0.1,localhost/sensors?sslmode=disable", true},
		{"mysql://u:p@127.0.0.1/sensors", false},
		{"host=127.0.0.1 user=u", false},
		{"", false},
	}
	for _, tc := range tests {
		e := sinkBase()
		e["DATABASE_URL"] = tc.url
		_, err := LoadSink("", env(e))
		if tc.ok != (err == nil) {
			t.Errorf("%q: err = %v, want ok=%v", tc.url, err, tc.ok)
			continue
		}
		var ce *Error
		if err != nil && (!errors.As(err, &ce) || ce.Key != "DATABASE_URL" || !errors.Is(err, ErrInvalid)) {
			t.Errorf("%q: %v does not name DATABASE_URL", tc.url, err)
		}
		if err != nil && strings.Contains(err.Error(), ":p@") {
			t.Errorf("%q: the message quotes the password: %v", tc.url, err)
		}
	}
}

func TestSinkInvalid(t *testing.T) {
	tests := []struct {
		set     map[string]string
		wantKey string
	}{
		{map[string]string{"SINK_RETENTION": "30"}, "SINK_RETENTION"},
		{map[string]string{"SINK_RETENTION": "5m"}, "SINK_RETENTION"},
		{map[string]string{"SINK_RETENTION": "xd"}, "SINK_RETENTION"},
		{map[string]string{"SINK_GROUP": "a\nb"}, "SINK_GROUP"},
		{map[string]string{"SINK_LISTEN": "9103"}, "SINK_LISTEN"},
		{map[string]string{"SINK_BATCH_SIZE": "0"}, "SINK_BATCH_SIZE"},
		{map[string]string{"CONFLUENT_API_SECRET": ""}, "CONFLUENT_API_SECRET"},
		{map[string]string{"DATABASE_URL": "", "DATABASE_URL_FILE": "/nonexistent"}, "DATABASE_URL_FILE"},
	}
	for _, tc := range tests {
		e := sinkBase()
		for k, v := range tc.set {
			e[k] = v
		}
		_, err := LoadSink("", env(e))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tc.wantKey {
			t.Errorf("%v: err = %v, want key %s", tc.set, err, tc.wantKey)
		}
	}
}
