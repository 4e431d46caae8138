package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
	"github.com/edgepipe/sensorpipe/buffer/secret"
)

// Sink is the validated configuration of `cloud-forwarder sink` (Kafka to
// PostgreSQL). Its Kafka settings are read exactly as for `run`.
type Sink struct {
	Kafka Kafka
	// DatabaseURL is the libpq URL (DATABASE_URL or the file named by
	// DATABASE_URL_FILE). A secret: it usually holds the password.
	DatabaseURL secret.Secret
	Group       string        // SINK_GROUP: Kafka consumer group
	Listen      string        // SINK_LISTEN: /metrics, /healthz, /readyz
	Retention   time.Duration // SINK_RETENTION: 0 keeps every row
	BatchSize   int           // SINK_BATCH_SIZE: records per database transaction, at most
	Writers     int           // SINK_WRITERS: database sessions writing at once, each for its share of the partitions
	LogLevel    string        // FORWARDER_LOG_LEVEL
	Pprof       bool          // FORWARDER_PPROF
}

// SinkVars lists the settings only `cloud-forwarder sink` reads; it also
// reads the CONFLUENT_*/KAFKA_* settings of Vars, FORWARDER_INSECURE,
// FORWARDER_LOG_LEVEL and FORWARDER_PPROF.
var SinkVars = []Var{
	{"DATABASE_URL", "", "PostgreSQL libpq URL, postgres://user:pass@host:5432/db?sslmode=verify-full (weaker sslmode only to loopback or a unix socket); required"},
	{"DATABASE_URL_FILE", "", "file holding DATABASE_URL (instead of DATABASE_URL)"},
	{"SINK_GROUP", DefaultSinkGroup, "Kafka consumer group of the sink replicas"},
	{"SINK_LISTEN", DefaultSinkListen, "/metrics, /healthz, /readyz of the sink"},
	{"SINK_RETENTION", "keep", "delete readings older than this (e.g. 720h or 90d); keep: never"},
	{"SINK_BATCH_SIZE", strconv.Itoa(DefaultSinkBatch), "records written per database transaction, at most"},
	{"SINK_WRITERS", strconv.Itoa(DefaultSinkWriters), "database sessions writing at once, each for a share of the partitions"},
}

// Sink defaults.
const (
	DefaultSinkGroup  = "sensorpipe-sink"
	DefaultSinkListen = ":9103"
	DefaultSinkBatch  = 5000
	// DefaultSinkWriters: two sessions let a database with cores to
	// spare work on one batch while the other's commit or round trip is in
	// flight. On the shared 2-core machine of docs/TARGETS.md, where
	// PostgreSQL is CPU-bound, 2 measured the same as 1 and 4 slower.
	DefaultSinkWriters = 2
	// MinRetention guards against a unit slip (SINK_RETENTION=30 meaning days) emptying the table.
	MinRetention = time.Hour
)

func allVars() []Var { return append(Vars[:len(Vars):len(Vars)], SinkVars...) }

// LoadSink is Load for `cloud-forwarder sink`.
func LoadSink(path string, getenv func(string) string) (*Sink, error) {
	vals, err := gather(path, getenv)
	if err != nil {
		return nil, err
	}
	get := getter(vals)
	c := &Config{}
	if c.Insecure, err = parseBool(get, "FORWARDER_INSECURE"); err != nil {
		return nil, err
	}
	if err := parseKafka(c, vals, get); err != nil {
		return nil, err
	}
	s := &Sink{Kafka: c.Kafka}
	if s.DatabaseURL, err = readSecret(vals, "DATABASE_URL"); err != nil {
		return nil, err
	}
	if _, err := DatabaseConfig(s.DatabaseURL.Reveal()); err != nil {
		return nil, err
	}
	s.Group = get("SINK_GROUP")
	if err := checkGroup(s.Group); err != nil {
		return nil, &Error{Key: "SINK_GROUP", Msg: err.Error()}
	}
	s.Listen = get("SINK_LISTEN")
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		return nil, &Error{Key: "SINK_LISTEN", Msg: fmt.Sprintf("%q is not host:port", s.Listen)}
	}
	if s.Retention, err = parseRetention(get("SINK_RETENTION")); err != nil {
		return nil, &Error{Key: "SINK_RETENTION", Msg: err.Error()}
	}
	if s.BatchSize, err = parseInt(get("SINK_BATCH_SIZE"), "SINK_BATCH_SIZE", 1, 100000); err != nil {
		return nil, err
	}
	if s.Writers, err = parseInt(get("SINK_WRITERS"), "SINK_WRITERS", 1, 64); err != nil {
		return nil, err
	}
	if s.Pprof, err = parseBool(get, "FORWARDER_PPROF"); err != nil {
		return nil, err
	}
	s.LogLevel = strings.ToLower(get("FORWARDER_LOG_LEVEL"))
	switch s.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, &Error{Key: "FORWARDER_LOG_LEVEL", Msg: fmt.Sprintf("%q is not debug, info, warn or error", s.LogLevel)}
	}
	return s, nil
}

// DatabaseFromEnv reads DATABASE_URL (or the file DATABASE_URL_FILE names)
// from getenv exactly as the sink does and returns DatabaseConfig's
// checked configuration, for the tools that read the sink's database
// (`cloud-forwarder fleet status`). Errors are *Error naming the key.
func DatabaseFromEnv(getenv func(string) string) (*pgx.ConnConfig, error) {
	u, err := SecretFromEnv(getenv, "DATABASE_URL")
	if err != nil {
		return nil, err
	}
	return DatabaseConfig(u.Reveal())
}

// DatabaseConfig parses DATABASE_URL as pgx will use it and checks that
// every connection pgx may open is safe: to loopback or a unix socket, or
// over TLS that verifies the server's certificate and host name (what
// sslmode=verify-full gives). The check reads pgx's parsed configuration, not
// the URL's text, so it sees what the text does not say: the PG* environment
// variables (PGHOST, PGSSLMODE, ...), a service file (service=,
// PGSERVICEFILE), a key given twice, and the fallbacks pgx tries after the
// first host (every further host; sslmode=prefer's plaintext retry). The
// sink connects with the configuration returned here and nothing else.
//
// Errors are *Error naming DATABASE_URL, and never quote the URL: it holds
// the password.
func DatabaseConfig(s string) (*pgx.ConnConfig, error) {
	cfg, err := parseDatabaseURL(s)
	if err != nil {
		return nil, &Error{Key: "DATABASE_URL", Msg: err.Error()}
	}
	return cfg, nil
}

func parseDatabaseURL(s string) (*pgx.ConnConfig, error) {
	if s == "" {
		return nil, fmt.Errorf("required (postgres://user:password@host:5432/dbname?sslmode=verify-full)")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("not a postgres:// URL")
	}
	cfg, err := pgx.ParseConfig(s)
	if err != nil {
		return nil, fmt.Errorf("not a usable libpq URL: %s", redact(err.Error(), u))
	}
	targets := append([]*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: cfg.TLSConfig}}, cfg.Fallbacks...)
	for i, t := range targets {
		if why := unsafeTarget(t); why != "" {
			which := "the connection"
			if i > 0 {
				which = fmt.Sprintf("fallback %d of %d", i, len(targets)-1)
			}
			return nil, fmt.Errorf("as pgx reads it (the URL, PG* environment variables, a service file), %s to %s would %s; "+
				"a database not on loopback or a unix socket needs sslmode=verify-full (certificate and host name checked; "+
				"sslrootcert=FILE for a private CA)",
				which, net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))), why)
		}
	}
	return cfg, nil
}

// unsafeTarget says what is wrong with one host pgx may connect to, or ""
// if nothing is. pgx sets InsecureSkipVerify for sslmode prefer, allow,
// require and verify-ca (verify-ca checks the chain in
// VerifyPeerCertificate but no name), and a ServerName for verify-full; so
// a verified name is a TLS config that leaves verification to crypto/tls
// and names the host.
func unsafeTarget(t *pgconn.FallbackConfig) string {
	if network, _ := pgconn.NetworkAddress(t.Host, t.Port); network == "unix" || mqttconn.IsLoopback(t.Host) {
		return ""
	}
	switch tc := t.TLSConfig; {
	case tc == nil:
		return "be plaintext (sslmode disable, or the plaintext try of prefer or allow)"
	case tc.InsecureSkipVerify:
		return "use TLS without checking the server's host name (sslmode prefer, allow, require or verify-ca)"
	case tc.ServerName == "":
		return "use TLS without a server name to check"
	}
	return ""
}

// redact removes the URL's password from a message.
func redact(msg string, u *url.URL) string {
	if u.User == nil {
		return msg
	}
	if p, ok := u.User.Password(); ok && p != "" {
		msg = strings.ReplaceAll(msg, p, "[redacted]")
	}
	return msg
}

// checkGroup applies Kafka's rules for a consumer group id: non-empty,
// printable, at most 255 bytes.
func checkGroup(g string) error {
	if g == "" || len(g) > 255 {
		return fmt.Errorf("%q is not 1 to 255 bytes", g)
	}
	for _, r := range g {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%q contains a control character", g)
		}
	}
	return nil
}

// parseRetention reads "keep" (or 0) for no retention, a Go duration
// (720h), or a number of days (90d).
func parseRetention(s string) (time.Duration, error) {
	switch strings.ToLower(s) {
	case "", "keep", "0", "none", "off":
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100*365 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not keep, a duration (720h) or days (90d)", s)
		}
	}
	if d < MinRetention {
		return 0, fmt.Errorf("%q is under %v; use keep to keep everything", s, MinRetention)
	}
	return d, nil
}
