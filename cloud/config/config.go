package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
	"github.com/edgepipe/sensorpipe/buffer/secret"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/buffer/tlsconf"
)

// Secret is buffer/secret's credential type, named here for the config's
// users; both programs share the one type.
type Secret = secret.Secret

// Kafka security protocols (KAFKA_SECURITY_PROTOCOL).
const (
	SASLSSL   = "SASL_SSL"
	SSL       = "SSL"
	Plaintext = "PLAINTEXT"
)

// Status topic settings (KAFKA_STATUS_TOPIC).
const (
	DefaultStatusTopic = "sensor-status"
	// StatusOff turns the status relay (and the sink's devices table) off.
	StatusOff = "off"
)

// Config is the validated forwarder configuration.
type Config struct {
	MQTT  MQTT
	Kafka Kafka

	ID         string // FORWARDER_ID: MQTT client id and forwarder_id header
	IDFrom     string // where ID came from, for the start-up log: "FORWARDER_ID" or the host name
	ShareGroup string // FORWARDER_SHARE_GROUP
	Listen     string // FORWARDER_LISTEN
	Insecure   bool   // FORWARDER_INSECURE: allow plaintext to non-loopback hosts

	// MaxInFlight bounds the messages received from MQTT and not yet acked
	// (FORWARDER_MAX_IN_FLIGHT). It bounds memory while Kafka is down.
	MaxInFlight int
	// MaxInFlightBytes bounds their payload bytes (FORWARDER_MAX_IN_FLIGHT_BYTES),
	// so a flood of large invalid payloads cannot exhaust memory either.
	MaxInFlightBytes int
	// ShutdownTimeout is how long SIGTERM waits for in-flight records (FORWARDER_SHUTDOWN_TIMEOUT).
	ShutdownTimeout time.Duration
	// DLQMaxBytes truncates dead-lettered payloads to this many bytes (FORWARDER_DLQ_MAX_BYTES).
	DLQMaxBytes int
	// LogLevel is debug, info, warn or error (FORWARDER_LOG_LEVEL).
	LogLevel string
	// Pprof serves net/http/pprof under /debug/pprof/ on Listen (FORWARDER_PPROF).
	Pprof bool
	// Confirm publishes confirmations to the devices (FORWARDER_CONFIRM);
	// off only for a fleet whose agents all run with delivery: broker,
	// which do not listen for them.
	Confirm bool
	// ConfirmInterval is the shortest time between two confirmations to the
	// same device (FORWARDER_CONFIRM_INTERVAL): seqs Kafka acknowledged in
	// between are coalesced into one message.
	ConfirmInterval time.Duration
	// ConfirmKeyFile is the Ed25519 private key that signs confirmations
	// (FORWARDER_CONFIRM_KEY_FILE, PEM PKCS#8); empty: unsigned, which
	// agents with mqtt.confirm_keys_file ignore. ConfirmKey is that key,
	// loaded by Load so a bad file is a configuration error.
	ConfirmKeyFile string
	ConfirmKey     *sign.Signer
	// MaxClockSkew is how far a reading's ts may be ahead of the forwarder's
	// clock (FORWARDER_MAX_CLOCK_SKEW); later ones go to the DLQ, before
	// Kafka (4.0 refuses record times more than 1h ahead by default) sees them.
	MaxClockSkew time.Duration
}

// MQTT is the broker side.
type MQTT struct {
	URL         string        // HIVEMQ_URL, normalised to ssl:// or tcp://
	Username    string        // HIVEMQ_USERNAME
	Password    secret.Secret // HIVEMQ_PASSWORD or the file named by HIVEMQ_PASSWORD_FILE
	CAFile      string        // HIVEMQ_CA_FILE
	TopicFilter string        // MQTT_TOPIC_FILTER
	TLS         bool          // derived from the URL scheme
	// StatusFilter is where the devices' heartbeats are read, derived from
	// TopicFilter ({prefix}/+/+/reading gives {prefix}/+/status); empty
	// when the status relay is off (KAFKA_STATUS_TOPIC=off) or when
	// TopicFilter ends in # and so covers the heartbeats already.
	StatusFilter string
}

// Kafka is the cluster side.
type Kafka struct {
	Bootstrap        []string      // CONFLUENT_BOOTSTRAP_SERVER_SASL, comma separated host:port
	APIKey           string        // CONFLUENT_API_KEY
	APISecret        secret.Secret // CONFLUENT_API_SECRET or the file named by CONFLUENT_API_SECRET_FILE
	SecurityProtocol string        // KAFKA_SECURITY_PROTOCOL
	CAFile           string        // KAFKA_CA_FILE
	Topic            string        // KAFKA_TOPIC
	DLQTopic         string        // KAFKA_DLQ_TOPIC, default Topic + ".dlq"
	// StatusTopic is the compacted topic of the devices' heartbeats
	// (KAFKA_STATUS_TOPIC), keyed by device_id; empty when set to "off".
	StatusTopic  string
	BatchBytes   int           // KAFKA_BATCH_BYTES: max bytes of one partition's batch (before compression)
	BatchTimeout time.Duration // KAFKA_BATCH_TIMEOUT: the producer's linger
	Compression  string        // KAFKA_COMPRESSION: none, gzip, snappy, lz4, zstd
}

// Var describes one setting, for documentation and `--help`. Default is
// what the parser uses when the setting is not given (the one place
// defaults are written); a default computed from other settings is empty
// here and described in Meaning.
type Var struct{ Name, Default, Meaning string }

// Vars lists every setting Load reads, in the order the docs show them.
var Vars = []Var{
	{"HIVEMQ_URL", "", "MQTT broker URL, ssl://host:8883 (tcp:// only to loopback or with FORWARDER_INSECURE=true); required"},
	{"HIVEMQ_USERNAME", "", "MQTT username"},
	{"HIVEMQ_PASSWORD", "", "MQTT password"},
	{"HIVEMQ_PASSWORD_FILE", "", "file holding the MQTT password (instead of HIVEMQ_PASSWORD)"},
	{"HIVEMQ_CA_FILE", "", "PEM CA bundle for the broker (empty: system roots, with an embedded fallback)"},
	{"MQTT_TOPIC_FILTER", "sensors/+/+/reading", "what to subscribe to"},
	{"FORWARDER_ID", "", "MQTT client id (persistent session) and forwarder_id header; required in a container, else the host name by default"},
	{"FORWARDER_SHARE_GROUP", "", "subscribe as $share/GROUP/FILTER so replicas split the stream"},
	{"CONFLUENT_BOOTSTRAP_SERVER_SASL", "", "Kafka bootstrap host:port[,host:port]; required"},
	{"CONFLUENT_API_KEY", "", "SASL PLAIN username"},
	{"CONFLUENT_API_SECRET", "", "SASL PLAIN password"},
	{"CONFLUENT_API_SECRET_FILE", "", "file holding the SASL password (instead of CONFLUENT_API_SECRET)"},
	{"KAFKA_SECURITY_PROTOCOL", SASLSSL, "SASL_SSL, SSL, or PLAINTEXT (loopback or FORWARDER_INSECURE only)"},
	{"KAFKA_CA_FILE", "", "PEM CA bundle for a private cluster"},
	{"KAFKA_TOPIC", "sensor-readings", "target topic"},
	{"KAFKA_DLQ_TOPIC", "", "dead-letter topic for payloads that fail validation (default KAFKA_TOPIC.dlq)"},
	{"KAFKA_STATUS_TOPIC", DefaultStatusTopic, "compacted topic (cleanup.policy=compact) of the devices' heartbeats, keyed by device_id: run relays {prefix}/+/status to it, the sink reads it into its devices table; off: neither"},
	{"KAFKA_BATCH_BYTES", "1048576", "max bytes of one partition's batch before compression (keep it under the topic's max.message.bytes); a batch holds what arrived while the requests before it were in flight"},
	{"KAFKA_BATCH_TIMEOUT", "5ms", "the producer's linger (0 to 1s): how long a partition's batch waits for more records before a request is built"},
	{"KAFKA_BATCH_SIZE", "", "retired: batches are capped by bytes (KAFKA_BATCH_BYTES); setting it is an error"},
	{"KAFKA_MAX_REQUESTS", "", "retired: the idempotent producer keeps up to 5 requests in flight per broker; only 5 is accepted"},
	{"KAFKA_COMPRESSION", "snappy", "none, gzip, snappy, lz4, zstd"},
	{"FORWARDER_LISTEN", ":9102", "/metrics, /healthz, /readyz"},
	{"FORWARDER_INSECURE", "false", "allow plaintext MQTT/Kafka to non-loopback hosts"},
	{"FORWARDER_MAX_IN_FLIGHT", "3500", "messages received and not yet acked (bounds memory while Kafka is down)"},
	{"FORWARDER_MAX_IN_FLIGHT_BYTES", "16777216", "payload bytes received and not yet acked"},
	{"FORWARDER_SHUTDOWN_TIMEOUT", "7s", "how long SIGTERM waits to flush in-flight records (the whole stop stays under 10 s)"},
	{"FORWARDER_DLQ_MAX_BYTES", "65536", "dead-lettered payloads are truncated to this size"},
	{"FORWARDER_LOG_LEVEL", "info", "debug, info, warn, error"},
	{"FORWARDER_PPROF", "false", "serve Go's /debug/pprof/ on FORWARDER_LISTEN (profiling)"},
	{"FORWARDER_CONFIRM", "true", "confirm Kafka-acked readings to their devices (false only when every agent runs with delivery: broker)"},
	{"FORWARDER_CONFIRM_INTERVAL", "1s", "at most one confirmation per device per interval, on {prefix}/{device_id}/ack, after Kafka has the readings"},
	{"FORWARDER_CONFIRM_KEY_FILE", "", "Ed25519 private key (PEM PKCS#8, openssl genpkey -algorithm ed25519) that signs confirmations; empty: unsigned, with a warning (agents with mqtt.confirm_keys_file ignore unsigned ones)"},
	{"FORWARDER_MAX_CLOCK_SKEW", "1h", "readings stamped further ahead of the forwarder's clock go to the DLQ"},
}

// Load reads the optional YAML file at path ("" for none) and then the
// environment through getenv, which wins. It returns an *Error wrapping
// ErrInvalid naming the first bad variable.
func Load(path string, getenv func(string) string) (*Config, error) {
	return load(path, getenv, system{
		inContainer: func() bool { return inContainer(getenv) },
		hostname:    os.Hostname,
	})
}

// system is what Load asks the machine (tests replace it).
type system struct {
	inContainer func() bool
	hostname    func() (string, error)
}

func load(path string, getenv func(string) string, sys system) (*Config, error) {
	vals, err := gather(path, getenv)
	if err != nil {
		return nil, err
	}
	return parse(vals, sys)
}

// inContainer reports whether we run in a container: Docker (/.dockerenv),
// Podman (/run/.containerenv), systemd-nspawn, LXC and Podman ($container),
// Kubernetes ($KUBERNETES_SERVICE_HOST).
func inContainer(getenv func(string) string) bool {
	if getenv("container") != "" || getenv("KUBERNETES_SERVICE_HOST") != "" {
		return true
	}
	for _, f := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

// LoadKafka is Load for commands that only talk to Kafka (`cloud-forwarder
// tail`): it reads and checks the Kafka settings and FORWARDER_INSECURE only.
func LoadKafka(path string, getenv func(string) string) (*Kafka, error) {
	vals, err := gather(path, getenv)
	if err != nil {
		return nil, err
	}
	c := &Config{}
	if c.Insecure, err = parseBool(getter(vals), "FORWARDER_INSECURE"); err != nil {
		return nil, err
	}
	if err := parseKafka(c, vals, getter(vals)); err != nil {
		return nil, err
	}
	return &c.Kafka, nil
}

func gather(path string, getenv func(string) string) (map[string]string, error) {
	vals := map[string]string{}
	if path != "" {
		if err := readFile(path, vals); err != nil {
			return nil, err
		}
	}
	for _, v := range allVars() {
		if s := getenv(v.Name); s != "" {
			vals[v.Name] = s
		}
	}
	return vals, nil
}

// getter returns the setting k from v, or its Default in the table.
func getter(v map[string]string) func(k string) string {
	return func(k string) string {
		if s, ok := v[k]; ok && strings.TrimSpace(s) != "" {
			return strings.TrimSpace(s)
		}
		return defaultOf(k)
	}
}

// defaultOf is the table's Default for key (Vars, SinkVars).
func defaultOf(key string) string {
	for _, v := range allVars() {
		if v.Name == key {
			return v.Default
		}
	}
	panic("config: " + key + " is not in the settings table")
}

func readFile(path string, vals map[string]string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return &Error{Key: "--config", Msg: err.Error()}
	}
	// Decoded as nodes, so every scalar stays the text written: an unquoted
	// password 007 is "007", not the number 7.
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return &Error{Key: "--config", Msg: fmt.Sprintf("%s: %v", path, err)}
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return &Error{Key: "--config", Msg: fmt.Sprintf("%s: not a mapping of keys to values", path)}
	}
	known := map[string]bool{}
	for _, v := range allVars() {
		known[strings.ToLower(v.Name)] = true
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i].Value, m.Content[i+1]
		switch {
		case !known[k]:
			return &Error{Key: k, Msg: fmt.Sprintf("unknown key in %s", path)}
		case seen[k]:
			return &Error{Key: k, Msg: fmt.Sprintf("appears twice in %s", path)}
		case v.Kind != yaml.ScalarNode:
			return &Error{Key: k, Msg: "must be a scalar"}
		}
		seen[k] = true
		if v.Tag == "!!null" {
			continue
		}
		vals[strings.ToUpper(k)] = v.Value
	}
	return nil
}

func parse(v map[string]string, sys system) (*Config, error) {
	get := getter(v)
	c := &Config{}
	var err error
	if c.Insecure, err = parseBool(get, "FORWARDER_INSECURE"); err != nil {
		return nil, err
	}

	// MQTT
	if c.MQTT.URL, c.MQTT.TLS, err = mqttURL(get("HIVEMQ_URL"), c.Insecure); err != nil {
		return nil, err
	}
	c.MQTT.Username = get("HIVEMQ_USERNAME")
	if c.MQTT.Password, err = readSecret(v, "HIVEMQ_PASSWORD"); err != nil {
		return nil, err
	}
	if c.MQTT.CAFile, err = caFile(get("HIVEMQ_CA_FILE"), "HIVEMQ_CA_FILE"); err != nil {
		return nil, err
	}
	c.MQTT.TopicFilter = get("MQTT_TOPIC_FILTER")
	if err := checkFilter(c.MQTT.TopicFilter); err != nil {
		return nil, &Error{Key: "MQTT_TOPIC_FILTER", Msg: err.Error()}
	}
	c.ID, c.IDFrom = get("FORWARDER_ID"), "FORWARDER_ID"
	if err := checkLevel(c.ID); err != nil {
		return nil, &Error{Key: "FORWARDER_ID", Msg: err.Error()}
	}
	c.ShareGroup = get("FORWARDER_SHARE_GROUP")
	if c.ShareGroup != "" {
		if err := checkLevel(c.ShareGroup); err != nil {
			return nil, &Error{Key: "FORWARDER_SHARE_GROUP", Msg: err.Error()}
		}
	}

	// Kafka
	if err := parseKafka(c, v, get); err != nil {
		return nil, err
	}

	if c.Kafka.StatusTopic != "" {
		if c.MQTT.StatusFilter, err = StatusFilter(c.MQTT.TopicFilter); err != nil {
			return nil, &Error{Key: "KAFKA_STATUS_TOPIC", Msg: err.Error()}
		}
	}

	// Forwarder
	c.Listen = get("FORWARDER_LISTEN")
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return nil, &Error{Key: "FORWARDER_LISTEN", Msg: fmt.Sprintf("%q is not host:port", c.Listen)}
	}
	ints := []struct {
		key      string
		min, max int
		dst      *int
	}{
		{"FORWARDER_MAX_IN_FLIGHT", 1, 1 << 20, &c.MaxInFlight},
		{"FORWARDER_MAX_IN_FLIGHT_BYTES", 64 << 10, 1 << 30, &c.MaxInFlightBytes},
		{"FORWARDER_DLQ_MAX_BYTES", 64, 900 << 10, &c.DLQMaxBytes},
		{"KAFKA_BATCH_BYTES", 1 << 10, 64 << 20, &c.Kafka.BatchBytes},
	}
	for _, i := range ints {
		if *i.dst, err = parseInt(get(i.key), i.key, i.min, i.max); err != nil {
			return nil, err
		}
	}
	durs := []struct {
		key string
		dst *time.Duration
	}{
		{"FORWARDER_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout},
		{"FORWARDER_CONFIRM_INTERVAL", &c.ConfirmInterval},
		{"FORWARDER_MAX_CLOCK_SKEW", &c.MaxClockSkew},
	}
	for _, d := range durs {
		if *d.dst, err = time.ParseDuration(get(d.key)); err != nil || *d.dst <= 0 {
			return nil, &Error{Key: d.key, Msg: fmt.Sprintf("%q is not a positive duration", get(d.key))}
		}
	}
	// The linger may be 0: a batch is built as soon as a request can go.
	if c.Kafka.BatchTimeout, err = time.ParseDuration(get("KAFKA_BATCH_TIMEOUT")); err != nil || c.Kafka.BatchTimeout < 0 || c.Kafka.BatchTimeout > time.Second {
		return nil, &Error{Key: "KAFKA_BATCH_TIMEOUT", Msg: fmt.Sprintf("%q is not a duration from 0 to 1s", get("KAFKA_BATCH_TIMEOUT"))}
	}
	if c.ConfirmInterval > time.Minute {
		// Agents re-send what stays unconfirmed past mqtt.confirm_timeout (60s by default).
		return nil, &Error{Key: "FORWARDER_CONFIRM_INTERVAL", Msg: fmt.Sprintf("%v is longer than 1m (agents re-send readings unconfirmed after mqtt.confirm_timeout)", c.ConfirmInterval)}
	}
	if c.Pprof, err = parseBool(get, "FORWARDER_PPROF"); err != nil {
		return nil, err
	}
	if c.Confirm, err = parseBool(get, "FORWARDER_CONFIRM"); err != nil {
		return nil, err
	}
	if c.ConfirmKeyFile = get("FORWARDER_CONFIRM_KEY_FILE"); c.ConfirmKeyFile != "" {
		if c.ConfirmKey, err = sign.LoadSigner(c.ConfirmKeyFile); err != nil {
			return nil, &Error{Key: "FORWARDER_CONFIRM_KEY_FILE", Msg: err.Error()}
		}
	}
	c.LogLevel = strings.ToLower(get("FORWARDER_LOG_LEVEL"))
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, &Error{Key: "FORWARDER_LOG_LEVEL", Msg: fmt.Sprintf("%q is not debug, info, warn or error", c.LogLevel)}
	}
	if c.ID == "" {
		if err := defaultID(c, sys); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// defaultID names the forwarder after its host when FORWARDER_ID is not
// set, except in a container: its host name changes with every container,
// and the broker would keep the persistent session (with the backlog queued
// while the forwarder was away) under the old name for ever.
func defaultID(c *Config, sys system) error {
	if sys.inContainer() {
		return &Error{Key: "FORWARDER_ID", Msg: "required in a container: the host name changes with every container, " +
			"and the broker keeps the persistent session, with its backlog, under the client id; set a stable id per replica"}
	}
	h, err := sys.hostname()
	if err != nil || h == "" {
		return &Error{Key: "FORWARDER_ID", Msg: "not set and the host name is unknown"}
	}
	if err := checkLevel(h); err != nil {
		return &Error{Key: "FORWARDER_ID", Msg: "not set, and the host name cannot be used: " + err.Error()}
	}
	c.ID, c.IDFrom = h, "host name (FORWARDER_ID not set)"
	return nil
}

// Warnings lists what is allowed but unsafe in c, for the start-up log:
// plaintext (FORWARDER_INSECURE) to a host that is not loopback, and
// unsigned confirmations.
func (c *Config) Warnings() []string {
	var ws []string
	if c.Confirm && c.ConfirmKey == nil {
		ws = append(ws, "FORWARDER_CONFIRM_KEY_FILE is not set: confirmations are unsigned. Agents with mqtt.confirm_keys_file "+
			"ignore them and keep every reading; agents without keys cannot tell them from forged ones (docs/FORWARDER.md, signed confirmations)")
	}
	if u, err := url.Parse(c.MQTT.URL); err == nil && !c.MQTT.TLS && !mqttconn.IsLoopback(u.Hostname()) {
		ws = append(ws, "HIVEMQ_URL: plaintext MQTT to "+u.Host+", not a loopback host (FORWARDER_INSECURE=true): "+
			"the broker password and every reading cross the network unencrypted")
	}
	if c.Kafka.SecurityProtocol == Plaintext {
		for _, hp := range c.Kafka.Bootstrap {
			if host, _, err := net.SplitHostPort(hp); err == nil && !mqttconn.IsLoopback(host) {
				ws = append(ws, "KAFKA_SECURITY_PROTOCOL: plaintext Kafka to "+hp+", not a loopback host (FORWARDER_INSECURE=true): "+
					"every record crosses the network unencrypted and unauthenticated")
				break
			}
		}
	}
	if c.MQTT.Username != "" && c.MQTT.Username != c.ID {
		ws = append(ws, fmt.Sprintf("FORWARDER_ID %q (the MQTT client id) differs from HIVEMQ_USERNAME %q: a broker set up with "+
			"`cloud-forwarder broker-auth` binds each login to the client id equal to its user name and refuses this forwarder", c.ID, c.MQTT.Username))
	}
	return ws
}

func parseKafka(c *Config, v map[string]string, get func(k string) string) error {
	k := &c.Kafka
	boot := get("CONFLUENT_BOOTSTRAP_SERVER_SASL")
	if boot == "" {
		return &Error{Key: "CONFLUENT_BOOTSTRAP_SERVER_SASL", Msg: "required (Kafka bootstrap host:port)"}
	}
	allLoopback := true
	for _, hp := range strings.Split(boot, ",") {
		hp = strings.TrimSpace(hp)
		if strings.Contains(hp, "@") { // not echoed: it holds a password
			return &Error{Key: "CONFLUENT_BOOTSTRAP_SERVER_SASL", Msg: "must not contain credentials (user:password@); use CONFLUENT_API_KEY and CONFLUENT_API_SECRET"}
		}
		host, port, err := net.SplitHostPort(hp)
		if err != nil || host == "" || port == "" {
			return &Error{Key: "CONFLUENT_BOOTSTRAP_SERVER_SASL", Msg: fmt.Sprintf("%q is not host:port", hp)}
		}
		allLoopback = allLoopback && mqttconn.IsLoopback(host)
		k.Bootstrap = append(k.Bootstrap, hp)
	}
	k.SecurityProtocol = strings.ToUpper(get("KAFKA_SECURITY_PROTOCOL"))
	k.APIKey = get("CONFLUENT_API_KEY")
	var err error
	if k.APISecret, err = readSecret(v, "CONFLUENT_API_SECRET"); err != nil {
		return err
	}
	switch k.SecurityProtocol {
	case SASLSSL:
		if k.APIKey == "" {
			return &Error{Key: "CONFLUENT_API_KEY", Msg: "required with KAFKA_SECURITY_PROTOCOL=SASL_SSL"}
		}
		if k.APISecret == "" {
			return &Error{Key: "CONFLUENT_API_SECRET", Msg: "required with KAFKA_SECURITY_PROTOCOL=SASL_SSL"}
		}
	case SSL:
	case Plaintext:
		if !allLoopback && !c.Insecure {
			return &Error{Key: "KAFKA_SECURITY_PROTOCOL", Msg: "PLAINTEXT is allowed only to loopback hosts or with FORWARDER_INSECURE=true"}
		}
	default:
		return &Error{Key: "KAFKA_SECURITY_PROTOCOL", Msg: fmt.Sprintf("%q is not SASL_SSL, SSL or PLAINTEXT", k.SecurityProtocol)}
	}
	if k.CAFile, err = caFile(get("KAFKA_CA_FILE"), "KAFKA_CA_FILE"); err != nil {
		return err
	}
	k.Topic = get("KAFKA_TOPIC")
	if err := checkKafkaTopic(k.Topic); err != nil {
		return &Error{Key: "KAFKA_TOPIC", Msg: err.Error()}
	}
	if k.DLQTopic = get("KAFKA_DLQ_TOPIC"); k.DLQTopic == "" {
		k.DLQTopic = k.Topic + ".dlq"
	}
	if err := checkKafkaTopic(k.DLQTopic); err != nil {
		return &Error{Key: "KAFKA_DLQ_TOPIC", Msg: err.Error()}
	}
	if k.DLQTopic == k.Topic {
		return &Error{Key: "KAFKA_DLQ_TOPIC", Msg: "must differ from KAFKA_TOPIC"}
	}
	if k.StatusTopic = get("KAFKA_STATUS_TOPIC"); k.StatusTopic == StatusOff {
		k.StatusTopic = ""
	} else if err := checkKafkaTopic(k.StatusTopic); err != nil {
		return &Error{Key: "KAFKA_STATUS_TOPIC", Msg: err.Error()}
	} else if k.StatusTopic == k.Topic || k.StatusTopic == k.DLQTopic {
		return &Error{Key: "KAFKA_STATUS_TOPIC", Msg: "must differ from KAFKA_TOPIC and KAFKA_DLQ_TOPIC"}
	}
	if err := retired(get); err != nil {
		return err
	}
	k.Compression = strings.ToLower(get("KAFKA_COMPRESSION"))
	switch k.Compression {
	case "none", "gzip", "snappy", "lz4", "zstd":
	default:
		return &Error{Key: "KAFKA_COMPRESSION", Msg: fmt.Sprintf("%q is not none, gzip, snappy, lz4 or zstd", k.Compression)}
	}
	return nil
}

// retired refuses the settings of the producer franz-go replaced, naming
// what took their place, so a configuration written for it does not run
// with a knob that silently does nothing.
func retired(get func(string) string) error {
	if v := get("KAFKA_BATCH_SIZE"); v != "" {
		return &Error{Key: "KAFKA_BATCH_SIZE", Msg: "no longer used: the producer (franz-go) caps a batch by bytes, not records; " +
			"unset it and set KAFKA_BATCH_BYTES if a cap is needed"}
	}
	if v := get("KAFKA_MAX_REQUESTS"); v != "" && v != "5" {
		return &Error{Key: "KAFKA_MAX_REQUESTS", Msg: fmt.Sprintf("%q: no longer a setting: the idempotent producer keeps up to 5 requests in flight "+
			"per broker, the most Kafka orders by sequence number; unset it (5 is accepted)", v)}
	}
	return nil
}

func mqttURL(s string, insecure bool) (string, bool, error) {
	const key = "HIVEMQ_URL"
	if s == "" {
		return "", false, &Error{Key: key, Msg: "required (e.g. ssl://YOUR-CLUSTER.hivemq.cloud:8883)"}
	}
	if hasUserinfo(s) { // checked first, and the value never echoed: it holds a password
		return "", false, &Error{Key: key, Msg: "must not contain credentials (user:password@); use HIVEMQ_USERNAME and HIVEMQ_PASSWORD"}
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Port() == "" {
		return "", false, &Error{Key: key, Msg: fmt.Sprintf("%q is not scheme://host:port", s)}
	}
	tls, err := mqttconn.TLS(u.Scheme)
	if err != nil {
		return "", false, &Error{Key: key, Msg: fmt.Sprintf("scheme %q is not ssl or tcp", u.Scheme)}
	}
	if !tls && !insecure && !mqttconn.IsLoopback(u.Hostname()) {
		return "", false, &Error{Key: key, Msg: "plaintext tcp:// is allowed only to loopback hosts or with FORWARDER_INSECURE=true; use ssl://"}
	}
	scheme := "tcp"
	if tls {
		scheme = "ssl"
	}
	return scheme + "://" + u.Host, tls, nil
}

// hasUserinfo reports whether the authority of URL s has a user@ part,
// without parsing s (whose parse errors would quote it).
func hasUserinfo(s string) bool {
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if j := strings.IndexAny(s, "/?#"); j >= 0 {
		s = s[:j]
	}
	return strings.Contains(s, "@")
}

// SecretFromEnv reads key from getenv, or the file that key_FILE names
// (not both), as the forwarder and the sink read their credentials:
// trailing newlines dropped, an empty file refused. Errors are *Error
// naming the key. The tools that share the credentials' variables
// (cloud-forwarder fleet) read them with it.
func SecretFromEnv(getenv func(string) string, key string) (secret.Secret, error) {
	return readSecret(map[string]string{key: getenv(key), key + "_FILE": getenv(key + "_FILE")}, key)
}

// readSecret reads KEY or the file named by KEY_FILE (not both).
func readSecret(v map[string]string, key string) (secret.Secret, error) {
	val, fileName := v[key], strings.TrimSpace(v[key+"_FILE"])
	if val != "" && fileName != "" {
		return "", &Error{Key: key, Msg: "set either " + key + " or " + key + "_FILE, not both"}
	}
	if fileName == "" {
		return secret.Secret(val), nil
	}
	b, err := os.ReadFile(fileName)
	if err != nil {
		return "", &Error{Key: key + "_FILE", Msg: err.Error()}
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", &Error{Key: key + "_FILE", Msg: fileName + " is empty"}
	}
	return secret.Secret(s), nil
}

// caFile checks that name holds PEM certificates, with the same loader the
// connections use, so a bad bundle is a configuration error (exit 2) and
// not a failure at every start.
func caFile(name, key string) (string, error) {
	if name == "" {
		return "", nil
	}
	if _, err := tlsconf.Client(name); err != nil {
		return "", &Error{Key: key, Msg: err.Error()}
	}
	return name, nil
}

func parseBool(get func(string) string, key string) (bool, error) {
	s := get(key)
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, &Error{Key: key, Msg: fmt.Sprintf("%q is not true or false", s)}
	}
	return b, nil
}

func parseInt(s, key string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, &Error{Key: key, Msg: fmt.Sprintf("%q is not an integer in [%d, %d]", s, lo, hi)}
	}
	return n, nil
}

// checkLevel accepts one MQTT topic level usable as a client id or share group name.
func checkLevel(s string) error {
	if len(s) > 256 {
		return fmt.Errorf("longer than 256 bytes")
	}
	for _, r := range s {
		if r == '+' || r == '#' || r == '/' || r < 0x20 || r == 0x7f {
			return fmt.Errorf("%q contains %q", s, r)
		}
	}
	return nil
}

// checkFilter validates an MQTT topic filter (MQTT 3.1.1 section 4.7).
func checkFilter(f string) error {
	if f == "" {
		return fmt.Errorf("empty")
	}
	if strings.HasPrefix(f, "$share/") {
		return fmt.Errorf("set FORWARDER_SHARE_GROUP instead of a $share/ filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("# must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("wildcard %q must occupy a whole level", l)
		}
	}
	return nil
}

// StatusFilter derives the filter of the devices' heartbeats,
// {prefix}/{device_id}/status, from the filter of their readings,
// {prefix}/{device_id}/{sensor}/reading: the two last levels give way to
// "status" (sensors/+/+/reading gives sensors/+/status, sensors/pi-1/+/reading
// gives sensors/pi-1/status). A filter ending in # covers the heartbeats
// already: "" and no error. Any other filter names no heartbeats.
func StatusFilter(readings string) (string, error) {
	levels := strings.Split(readings, "/")
	n := len(levels)
	switch {
	case levels[n-1] == "#":
		return "", nil
	case n >= 3 && levels[n-1] == "reading":
		return strings.Join(levels[:n-2], "/") + "/status", nil
	}
	return "", fmt.Errorf("the heartbeats' filter cannot be derived from MQTT_TOPIC_FILTER %q (want {prefix}/{device}/{sensor}/reading "+
		"or a filter ending in #): set KAFKA_STATUS_TOPIC=off to relay no heartbeats", readings)
}

// checkKafkaTopic applies Kafka's topic name rules.
func checkKafkaTopic(t string) error {
	if t == "" || t == "." || t == ".." || len(t) > 249 {
		return fmt.Errorf("%q is not a valid Kafka topic name", t)
	}
	for _, r := range t {
		ok := r == '.' || r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("%q: Kafka topic names use only [a-zA-Z0-9._-]", t)
		}
	}
	return nil
}
