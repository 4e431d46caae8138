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
	if s.Group != "sensorpipe-sink" || s.Listen != ":9103" || s.Retention != 0 || s.BatchSize != 5000 || s.Writers != 2 ||
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
	clearPGEnv(t)
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

// pgEnv are the environment variables pgx reads that could change where
// or how it connects; clearPGEnv empties them (pgx ignores an empty one), so
// the machine's own settings do not leak into a test.
var pgEnv = []string{"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSSLMODE", "PGSSLROOTCERT",
	"PGSSLNEGOTIATION", "PGSSLSNI", "PGSERVICE", "PGSERVICEFILE", "PGSSLCERT", "PGSSLKEY", "PGTARGETSESSIONATTRS"}

func clearPGEnv(t *testing.T) {
	t.Helper()
	for _, k := range pgEnv {
		t.Setenv(k, "")
	}
}

// TestSinkDatabaseURLAsPgxReadsIt: the TLS rule holds for what pgx will do,
// not for the URL's text. Each way around the old text check (a key given
// twice, a host from PGHOST, a service file, the plaintext retry of
// sslmode=prefer, a second host) is refused, naming DATABASE_URL; a
// verified remote host and local ones stay allowed, whichever source set
// them.
func TestSinkDatabaseURLAsPgxReadsIt(t *testing.T) {
	tests := []struct {
		name string
		url  string
		env  map[string]string
		ok   bool
		want string // in the message when refused
	}{
		{name: "sslmode given twice, the last wins", url: "postgres://u:p@db.example.com/sensors?sslmode=verify-full&sslmode=disable",
			want: "db.example.com:5432 would be plaintext"},
		{name: "verify-full after a weaker one", url: "postgres://u:p@db.example.com/sensors?sslmode=disable&sslmode=verify-full", ok: true},
		{name: "no host in the URL, PGHOST remote", url: "postgres://u:p@/sensors", env: map[string]string{"PGHOST": "db.example.com"},
			want: "db.example.com:5432"},
		{name: "no host in the URL, PGHOST remote, PGSSLMODE verify-full", url: "postgres://u:p@/sensors",
			env: map[string]string{"PGHOST": "db.example.com", "PGSSLMODE": "verify-full"}, ok: true},
		{name: "remote URL, PGSSLMODE require", url: "postgres://u:p@db.example.com/sensors", env: map[string]string{"PGSSLMODE": "require"},
			want: "without checking the server's host name"},
		{name: "remote URL, PGSSLMODE verify-full", url: "postgres://u:p@db.example.com/sensors", env: map[string]string{"PGSSLMODE": "verify-full"}, ok: true},
		{name: "URL verify-full wins over PGSSLMODE disable", url: "postgres://u:p@db.example.com/sensors?sslmode=verify-full",
			env: map[string]string{"PGSSLMODE": "disable"}, ok: true},
		{name: "service with sslmode=disable", url: "postgres://u:p@/sensors?service=prod", want: "db.example.com:5432 would be plaintext"},
		{name: "service from PGSERVICE", url: "postgres://u:p@/sensors", env: map[string]string{"PGSERVICE": "prod"}, want: "plaintext"},
		{name: "service file named in the URL", url: "postgres://u:p@/sensors?service=prod&servicefile=testdata/pg_service.conf",
			env: map[string]string{"PGSERVICEFILE": "/nonexistent"}, want: "plaintext"},
		{name: "service with verify-full", url: "postgres://u:p@/sensors?service=prod-verified", ok: true},
		{name: "URL sslmode verify-full over the service's disable", url: "postgres://u:p@/sensors?service=prod&sslmode=verify-full", ok: true},
		{name: "service to loopback without TLS", url: "postgres://u:p@/sensors?service=local", ok: true},
		{name: "prefer: TLS unverified, then plaintext", url: "postgres://u:p@db.example.com/sensors?sslmode=prefer",
			want: "without checking the server's host name"},
		{name: "allow: plaintext first, then TLS", url: "postgres://u:p@db.example.com/sensors?sslmode=allow", want: "plaintext"},
		{name: "second host is remote and unverified", url: "postgres://u:p@127.0.0.1,db.example.com/sensors?sslmode=disable",
			want: "fallback 1 of 1 to db.example.com:5432 would be plaintext"},
		{name: "first host is remote and unverified", url: "postgres://u:p@db.example.com,127.0.0.1/sensors?sslmode=require",
			want: "the connection to db.example.com:5432"},
		{name: "two remote hosts, both verified", url: "postgres://u:p@db1.example.com:5432,db2.example.com:6432/sensors?sslmode=verify-full", ok: true},
		{name: "loopback plus verified remote", url: "postgres://u:p@127.0.0.1,db.example.com/sensors?sslmode=verify-full", ok: true},
		{name: "host= in the query overrides the URL's loopback", url: "postgres://u:p@127.0.0.1/sensors?host=db.example.com&sslmode=disable",
			want: "db.example.com:5432"},
		{name: "unix socket, TLS ignored", url: "postgres://u@/sensors?host=/var/run/postgresql&sslmode=disable", ok: true},
		{name: "unix socket from PGHOST", url: "postgres://u@/sensors", env: map[string]string{"PGHOST": "/tmp"}, ok: true},
		{name: "IPv6 loopback prefer", url: "postgres://u:p@[::1]/sensors", ok: true},
		{name: "sslrootcert=system means verify-full", url: "postgres://u:p@db.example.com/sensors?sslrootcert=system", ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearPGEnv(t)
			t.Setenv("PGSERVICEFILE", "testdata/pg_service.conf")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := DatabaseConfig(tc.url)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if cfg == nil {
					t.Fatal("no config")
				}
				e := sinkBase()
				e["DATABASE_URL"] = tc.url
				if _, err := LoadSink("", env(e)); err != nil {
					t.Fatalf("LoadSink refused what DatabaseConfig took: %v", err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != "DATABASE_URL" || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want a configuration error naming DATABASE_URL", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "verify-full") {
				t.Errorf("message %q does not say %q and verify-full", err, tc.want)
			}
			if strings.Contains(err.Error(), ":p@") {
				t.Errorf("the message quotes the password: %v", err)
			}
			e := sinkBase()
			e["DATABASE_URL"] = tc.url
			if _, err := LoadSink("", env(e)); !errors.As(err, &ce) || ce.Key != "DATABASE_URL" {
				t.Errorf("LoadSink = %v, want it refused naming DATABASE_URL", err)
			}
		})
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
		{map[string]string{"SINK_WRITERS": "0"}, "SINK_WRITERS"},
		{map[string]string{"SINK_WRITERS": "65"}, "SINK_WRITERS"},
		{map[string]string{"SINK_WRITERS": "two"}, "SINK_WRITERS"},
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
