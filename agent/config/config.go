// Package config loads and validates the edge agent's YAML configuration
// (docs/DESIGN.md, "Configuration"). It is parsed once at start into a
// typed Config; nothing else in the agent reads files or env vars for settings.
//
// Every validation error wraps ErrInvalid and names the offending key, so the
// CLI can exit with status 2 and a message a person can act on:
//
//	cfg, err := config.Load("/etc/edge-agent/config.yaml", os.Getenv)
//	if errors.Is(err, config.ErrInvalid) { /* exit 2 */ }
package config

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/dustin/go-humanize"
	"go.yaml.in/yaml/v3"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/buffer/secret"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/buffer/tlsconf"
	"github.com/edgepipe/sensorpipe/drivers"
)

// DefaultPath is where the agent looks for its config on a Pi.
const DefaultPath = "/etc/edge-agent/config.yaml"

// PasswordEnv is the environment variable that may hold the MQTT password.
const PasswordEnv = "EDGE_AGENT_MQTT_PASSWORD"

// ErrInvalid is wrapped by every error about the config's content.
var ErrInvalid = cmdline.NewUsageError("invalid configuration")

// Error is a problem with one config key.
type Error struct {
	Key string // dotted path, e.g. "mqtt.url" or "sensors[2].interval"
	Msg string
	Err error // the underlying error, if any (a missing file, say)
}

func (e *Error) Error() string { return fmt.Sprintf("config: %s: %s", e.Key, e.Msg) }

// Unwrap makes errors.Is(err, ErrInvalid) true, and errors.Is on the
// underlying error (fs.ErrNotExist for a missing file) too.
func (e *Error) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// Config is the whole agent configuration.
type Config struct {
	DeviceID     string         `yaml:"device_id"`
	Sensors      []drivers.Spec `yaml:"sensors"`
	Buffer       Buffer         `yaml:"buffer"`
	MQTT         MQTT           `yaml:"mqtt"`
	Clock        Clock          `yaml:"clock"`
	Fleet        Fleet          `yaml:"fleet"`
	Update       Update         `yaml:"update"`
	StatusListen string         `yaml:"status_listen"` // empty disables the endpoint
	SysfsRoot    string         `yaml:"sysfs_root"`
	LogLevel     slog.Level     `yaml:"log_level"`
	LogFormat    string         `yaml:"log_format"` // auto, text or json
	Extra        map[string]any `yaml:",inline"`    // catches unknown keys; must stay empty
	path         string
	version      string

	// StatusInterval is how often the retained heartbeat is published
	// when nothing changes (it is also published on every change).
	StatusInterval time.Duration `yaml:"status_interval"`
}

// Buffer configures the on-disk store-and-forward queue.
type Buffer struct {
	Path     string        `yaml:"path"`
	MaxBytes ByteSize      `yaml:"max_bytes"` // past this the oldest readings are downsampled or dropped (WhenFull)
	MaxAge   time.Duration `yaml:"max_age"`   // readings older than this are dropped
	// WhenFull is what a full buffer does with its oldest readings:
	// WhenFullDownsample folds them into per-sensor aggregates, coarser the
	// older (docs/BUFFER.md, "Downsampling"); WhenFullDrop deletes them.
	WhenFull string `yaml:"when_full"`
}

// buffer.when_full values.
const (
	WhenFullDownsample = "downsample"
	WhenFullDrop       = "drop"
)

// Clock configures what happens to readings taken before NTP has set the
// clock (a Pi has no real-time clock).
type Clock struct {
	// HoldUnsynced is how long such a reading is held back from publishing
	// so that its timestamp can be corrected when the clock syncs; past
	// that it is published as it is, with time_synced false. 0: no hold.
	HoldUnsynced time.Duration `yaml:"hold_unsynced"`
}

// Fleet configures remote config documents and commands (agent/remote):
// which operator keys are trusted and which group the device belongs to.
// Both stay local: a remote document cannot change them.
type Fleet struct {
	// KeysFile holds the operators' Ed25519 public keys (PEM, several for
	// rotation). Empty: remote config and commands are off.
	KeysFile string `yaml:"keys_file"`
	// Group is the group whose config this device applies; empty: none.
	Group string `yaml:"group"`
	// Grace is how long a newly applied remote config has to store a
	// reading before the agent returns to the last config that worked;
	// at least 3 of that config's longest sensor interval.
	Grace time.Duration `yaml:"grace"`
}

// Update configures over-the-air updates (agent/update). It stays local:
// a remote document cannot change it. Updates are on when KeysFile is set
// (with fleet.keys_file and fleet.group, which the offers need).
type Update struct {
	// KeysFile holds the release keys' Ed25519 public keys (PEM), which
	// sign the manifests; not the fleet key. Empty: updates are off.
	KeysFile string `yaml:"keys_file"`
	// Deadline is how long a new version has to prove itself healthy
	// before the previous one comes back.
	Deadline time.Duration `yaml:"deadline"`
	// MaxSize refuses a manifest announcing a larger binary.
	MaxSize ByteSize `yaml:"max_size"`
	// CAFile is a CA bundle for the download server; empty: system roots.
	CAFile string `yaml:"ca_file"`
	// Dir holds state.json, the staged versions and the downloads; empty:
	// "update" beside the buffer (UpdateDir).
	Dir string `yaml:"dir"`
}

// UpdateDir is update.dir, or its default: "update" in the buffer's
// directory (/var/lib/edge-agent/update on a Pi).
func (c *Config) UpdateDir() string {
	if c.Update.Dir != "" {
		return c.Update.Dir
	}
	return filepath.Join(filepath.Dir(c.Buffer.Path), "update")
}

// MQTT configures the connection to the broker (HiveMQ Cloud in production).
type MQTT struct {
	URL          string        `yaml:"url"`
	Username     string        `yaml:"username"`
	PasswordFile string        `yaml:"password_file"`
	CAFile       string        `yaml:"ca_file"`
	TopicPrefix  string        `yaml:"topic_prefix"`
	ClientID     string        `yaml:"client_id"` // default: device_id
	Insecure     bool          `yaml:"insecure"`  // allow tcp:// to a non-loopback host
	KeepAlive    time.Duration `yaml:"keepalive"`
	// MaxInflight is the window of QoS 1 publishes awaiting PUBACK; lower
	// it for a broker that throttles a client with many in flight.
	MaxInflight int `yaml:"max_inflight"`
	// Delivery is when a reading leaves the buffer: DeliveryKafka (when a
	// forwarder confirms that Kafka has it) or DeliveryBroker (at the
	// broker's PUBACK, for consumers other than our forwarder).
	Delivery string `yaml:"delivery"`
	// ConfirmTimeout (kafka) is how long a published reading waits for its
	// confirmation before it is sent again.
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// MaxUnconfirmed (kafka) caps the readings published and not yet
	// confirmed; at the cap readings wait in the buffer.
	MaxUnconfirmed int `yaml:"max_unconfirmed"`
	// ConfirmKeysFile (kafka) holds the forwarders' Ed25519 public keys,
	// one or more PEM "PUBLIC KEY" blocks (openssl pkey -pubout), several
	// while a key rotates. With it, a confirmation that is unsigned or does
	// not verify is ignored and deletes nothing.
	ConfirmKeysFile string `yaml:"confirm_keys_file"`
	// ConfirmUnsigned (kafka) accepts unsigned confirmations, which anybody
	// who can publish on the device's ack topic can forge: the explicit
	// choice for a fleet whose forwarders do not sign yet.
	ConfirmUnsigned bool `yaml:"confirm_unsigned"`
	// ConfirmKeys is ConfirmKeysFile's keyring, loaded by Parse; nil without one.
	ConfirmKeys *sign.Verifier `yaml:"-"`
	// Password is read from PasswordEnv or PasswordFile by Load, never from YAML.
	Password secret.Secret `yaml:"-"`
}

// Secret is buffer/secret's credential type, named here for the config's
// users; both programs share the one type.
type Secret = secret.Secret

// ByteSize is a size in bytes written as "256MiB", "64MB" or "1048576".
type ByteSize int64

// UnmarshalYAML parses human sizes with go-humanize.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := humanize.ParseBytes(n.Value)
	if err != nil || v > 1<<62 {
		return fmt.Errorf("line %d: %q is not a size like 256MiB", n.Line, n.Value)
	}
	*b = ByteSize(v)
	return nil
}

// String formats the size the way it is written in the config.
func (b ByteSize) String() string { return humanize.IBytes(uint64(b)) }

// Delivery modes (mqtt.delivery).
const (
	DeliveryKafka  = "kafka"
	DeliveryBroker = "broker"
)

// Limits of mqtt.max_unconfirmed: each unconfirmed reading costs the agent
// about 100 bytes of memory, so the maximum is about 10 MiB.
const maxUnconfirmed = 100_000

// Path is the file the config was loaded from.
func (c *Config) Path() string { return c.path }

// Version names the config's content, for the heartbeat: the first 12 hex
// digits of the SHA-256 of the bytes it was parsed from.
func (c *Config) Version() string { return c.version }

// The defaults, applied once: Default fills a config with them before the
// YAML is decoded over it, and Parse then fills the per-sensor and derived
// ones (applyDefaults). Validate changes nothing.
const (
	DefaultBufferPath = "/var/lib/edge-agent/buffer.db"
	DefaultMaxBytes   = ByteSize(256 << 20)
	DefaultMaxAge     = 720 * time.Hour
	// DefaultWhenFull: an old reading at a coarser resolution is worth
	// more than none, and max_bytes holds either way.
	DefaultWhenFull       = WhenFullDownsample
	DefaultTopicPrefix    = "sensors"
	DefaultKeepAlive      = 30 * time.Second
	DefaultMaxInflight    = 2000
	DefaultDelivery       = DeliveryKafka
	DefaultConfirmTimeout = time.Minute
	DefaultMaxUnconfirmed = 10_000
	DefaultHoldUnsynced   = 10 * time.Minute
	DefaultStatusListen   = "127.0.0.1:9101"
	DefaultStatusInterval = time.Minute
	DefaultSysfsRoot      = "/sys"
	DefaultLogFormat      = "auto"
	DefaultFleetGrace     = 2 * time.Minute
	DefaultUpdateDeadline = 2 * time.Minute
	DefaultUpdateMaxSize  = ByteSize(64 << 20)
	// DefaultInterval is a sensor's poll interval when it gives none.
	DefaultInterval = 10 * time.Second
)

// Default returns a config with every default set and no sensors.
func Default() Config {
	return Config{
		Buffer: Buffer{
			Path:     DefaultBufferPath,
			MaxBytes: DefaultMaxBytes,
			MaxAge:   DefaultMaxAge,
			WhenFull: DefaultWhenFull,
		},
		MQTT: MQTT{
			TopicPrefix:    DefaultTopicPrefix,
			KeepAlive:      DefaultKeepAlive,
			MaxInflight:    DefaultMaxInflight,
			Delivery:       DefaultDelivery,
			ConfirmTimeout: DefaultConfirmTimeout,
			MaxUnconfirmed: DefaultMaxUnconfirmed,
		},
		Clock:        Clock{HoldUnsynced: DefaultHoldUnsynced},
		Fleet:        Fleet{Grace: DefaultFleetGrace},
		Update:       Update{Deadline: DefaultUpdateDeadline, MaxSize: DefaultUpdateMaxSize},
		StatusListen: DefaultStatusListen,
		SysfsRoot:    DefaultSysfsRoot,
		LogFormat:    DefaultLogFormat,

		StatusInterval: DefaultStatusInterval,
	}
}

// applyDefaults fills what depends on the decoded file: a sensor's
// interval, and the client id (the device id).
func (c *Config) applyDefaults() {
	for i := range c.Sensors {
		if c.Sensors[i].Interval == 0 {
			c.Sensors[i].Interval = DefaultInterval
		}
	}
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = c.DeviceID
	}
}

// Load reads, defaults and validates the config at path. getenv supplies
// environment variables (os.Getenv in production). The MQTT password is
// read from PasswordEnv or mqtt.password_file.
func Load(path string, getenv func(string) string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		// Exit 2, not 1: under systemd a missing config is a setup error,
		// and restarting will not fix it.
		return nil, &Error{Key: "--config", Msg: err.Error(), Err: err}
	}
	c, err := Parse(b, getenv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.path = path
	return c, nil
}

// Parse is Load on bytes already read.
func Parse(b []byte, getenv func(string) string) (*Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, &Error{Key: "yaml", Msg: err.Error()}
	}
	c.applyDefaults()
	if err := c.loadSecrets(getenv); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.version = fmt.Sprintf("%x", sha256.Sum256(b))[:12]
	if f := c.MQTT.ConfirmKeysFile; f != "" {
		v, err := sign.LoadVerifier(f)
		if err != nil {
			return nil, &Error{Key: "mqtt.confirm_keys_file", Msg: err.Error(), Err: err}
		}
		c.MQTT.ConfirmKeys = v
	}
	return &c, nil
}

// AcceptsUnsigned reports whether the agent deletes readings on unsigned
// confirmations: delivery kafka without mqtt.confirm_keys_file, whether
// mqtt.confirm_unsigned says so or the config predates the keys.
func (c *Config) AcceptsUnsigned() bool {
	return c.MQTT.Delivery == DeliveryKafka && c.MQTT.ConfirmKeysFile == ""
}

// Strict returns what `edge-agent config check` refuses but `edge-agent
// run` only warns about, at every start: a config written before a setting
// became necessary. An upgrade must never stop a Pi, so run keeps going
// the way the config worked before; check tells the operator to finish
// the job. Today that is delivery kafka with neither
// mqtt.confirm_keys_file nor mqtt.confirm_unsigned: true.
func (c *Config) Strict() error {
	if c.AcceptsUnsigned() && !c.MQTT.ConfirmUnsigned {
		return &Error{Key: "mqtt.confirm_keys_file", Msg: "not set with delivery: kafka: any login that can publish on " +
			c.MQTT.TopicPrefix + "/" + c.DeviceID + "/ack could forge a confirmation and delete readings Kafka never got. " +
			"Give the forwarders' public keys (openssl pkey -in confirm.key -pubout), or set mqtt.confirm_unsigned: true " +
			"to accept unsigned confirmations knowingly"}
	}
	return nil
}

func (c *Config) loadSecrets(getenv func(string) string) error {
	if p := getenv(PasswordEnv); p != "" {
		c.MQTT.Password = secret.Secret(p)
		return nil
	}
	if c.MQTT.PasswordFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.MQTT.PasswordFile)
	if err != nil {
		return &Error{Key: "mqtt.password_file", Msg: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}
	}
	c.MQTT.Password = secret.Secret(strings.TrimRight(string(b), "\r\n"))
	return nil
}

// Validate checks every key and returns the first problem found. It
// changes nothing: the defaults are Parse's job.
func (c *Config) Validate() error {
	if len(c.Extra) > 0 {
		return &Error{Key: sortedKeys(c.Extra)[0], Msg: "unknown key"}
	}
	if err := reading.CheckName(c.DeviceID); err != nil {
		return &Error{Key: "device_id", Msg: err.Error()}
	}
	if len(c.Sensors) == 0 {
		return &Error{Key: "sensors", Msg: "at least one sensor is needed"}
	}
	seen := map[string]bool{}
	for i, s := range c.Sensors {
		key := fmt.Sprintf("sensors[%d]", i)
		if err := reading.CheckName(s.Name); err != nil {
			return &Error{Key: key + ".name", Msg: err.Error()}
		}
		if seen[s.Name] {
			return &Error{Key: key + ".name", Msg: fmt.Sprintf("%q is used twice", s.Name)}
		}
		seen[s.Name] = true
		if s.Interval < 10*time.Millisecond {
			return &Error{Key: key + ".interval", Msg: fmt.Sprintf("%v is too short (minimum 10ms)", s.Interval)}
		}
		if err := drivers.Check(s); err != nil {
			return &Error{Key: key, Msg: err.Error()}
		}
		if err := checkDeadband(key, s); err != nil {
			return err
		}
	}
	if c.Buffer.Path == "" {
		return &Error{Key: "buffer.path", Msg: "must not be empty"}
	}
	if c.Buffer.MaxBytes < 1<<20 {
		return &Error{Key: "buffer.max_bytes", Msg: fmt.Sprintf("%v is too small (minimum 1MiB)", c.Buffer.MaxBytes)}
	}
	if c.Buffer.MaxAge <= 0 {
		return &Error{Key: "buffer.max_age", Msg: "must be positive"}
	}
	if w := c.Buffer.WhenFull; w != WhenFullDownsample && w != WhenFullDrop {
		return &Error{Key: "buffer.when_full", Msg: fmt.Sprintf("%q is neither %s nor %s", w, WhenFullDownsample, WhenFullDrop)}
	}
	if c.Clock.HoldUnsynced < 0 {
		return &Error{Key: "clock.hold_unsynced", Msg: "must not be negative (0 turns the hold off)"}
	}
	if err := c.MQTT.validate(); err != nil {
		return err
	}
	if err := c.Fleet.validate(); err != nil {
		return err
	}
	if err := c.validateUpdate(); err != nil {
		return err
	}
	if c.StatusInterval < time.Second {
		return &Error{Key: "status_interval", Msg: fmt.Sprintf("%v is too short (minimum 1s)", c.StatusInterval)}
	}
	if c.StatusListen != "" {
		if _, _, err := net.SplitHostPort(c.StatusListen); err != nil {
			return &Error{Key: "status_listen", Msg: fmt.Sprintf("%q is not host:port", c.StatusListen)}
		}
	}
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		return &Error{Key: "log_format", Msg: fmt.Sprintf("%q is not auto, text or json", c.LogFormat)}
	}
	return nil
}

// checkDeadband checks a sensor's deadband amounts and max_silence.
func checkDeadband(key string, s drivers.Spec) error {
	for _, field := range slices.Sorted(maps.Keys(s.Deadband)) {
		k := key + ".deadband." + field
		if err := reading.CheckName(field); err != nil {
			return &Error{Key: k, Msg: "is not a value key like temperature_c: " + err.Error()}
		}
		if v := s.Deadband[field]; v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return &Error{Key: k, Msg: fmt.Sprintf("%v must be a finite amount, not negative (0 stores any change)", v)}
		}
	}
	switch ms := s.MaxSilence; {
	case ms < 0:
		return &Error{Key: key + ".max_silence", Msg: "must not be negative (0 means 5m)"}
	case ms > 0 && len(s.Deadband) == 0:
		return &Error{Key: key + ".max_silence", Msg: "is set without a deadband (it bounds the silence a deadband makes); add deadband: {value_key: amount}"}
	case ms > 0 && ms <= s.Interval:
		return &Error{Key: key + ".max_silence", Msg: fmt.Sprintf("%v is not longer than the interval %v: every reading would be stored", ms, s.Interval)}
	}
	return nil
}

func (m *MQTT) validate() error {
	if m.URL == "" {
		return &Error{Key: "mqtt.url", Msg: "is required (ssl://YOUR-CLUSTER.hivemq.cloud:8883)"}
	}
	u, err := url.Parse(m.URL)
	if err != nil || u.Host == "" {
		// The value is not echoed: it may hold a password.
		return &Error{Key: "mqtt.url", Msg: "is not a URL like ssl://host:8883"}
	}
	if u.User != nil {
		// The URL is logged and printed; credentials in it would leak.
		return &Error{Key: "mqtt.url", Msg: "must not contain credentials; use mqtt.username and mqtt.password_file"}
	}
	tls, err := mqttconn.TLS(u.Scheme)
	if err != nil {
		return &Error{Key: "mqtt.url", Msg: fmt.Sprintf("scheme %q is not ssl or tcp", u.Scheme)}
	}
	if !tls && !m.Insecure && !mqttconn.IsLoopback(u.Hostname()) {
		return &Error{Key: "mqtt.url", Msg: fmt.Sprintf("plaintext %s:// to %s sends the password in clear; use ssl:// or set mqtt.insecure: true", u.Scheme, u.Hostname())}
	}
	if err := reading.CheckName(m.TopicPrefix); m.TopicPrefix != "" && err != nil {
		return &Error{Key: "mqtt.topic_prefix", Msg: err.Error()}
	}
	if m.Username != "" && m.Password == "" {
		return &Error{Key: "mqtt.password_file", Msg: fmt.Sprintf("username is set but there is no password (set mqtt.password_file or %s)", PasswordEnv)}
	}
	if m.CAFile != "" {
		// Checked here, not first at connect: a bad file would make `run`
		// exit 1 and systemd restart it for ever.
		// Loaded the way the publisher will load it (buffer/tlsconf).
		if _, err := tlsconf.Client(m.CAFile); errors.Is(err, tlsconf.ErrNoCertificate) {
			// The content is not echoed: it may be a secret put in the wrong key.
			return &Error{Key: "mqtt.ca_file", Msg: fmt.Sprintf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----); "+
				"give a CA bundle, or leave it empty for the system roots", m.CAFile)}
		} else if err != nil {
			return &Error{Key: "mqtt.ca_file", Msg: fmt.Sprintf("cannot read %s", m.CAFile), Err: errors.Unwrap(err)}
		}
	}
	if len(m.ClientID) > 256 || strings.IndexFunc(m.ClientID, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return &Error{Key: "mqtt.client_id", Msg: fmt.Sprintf("%q must be at most 256 bytes without spaces or control characters", m.ClientID)}
	}
	if m.KeepAlive < time.Second {
		return &Error{Key: "mqtt.keepalive", Msg: "must be at least 1s"}
	}
	if m.MaxInflight < 1 || m.MaxInflight > 65535 {
		return &Error{Key: "mqtt.max_inflight", Msg: fmt.Sprintf("%d is not between 1 and 65535 (MQTT packet ids)", m.MaxInflight)}
	}
	switch m.Delivery {
	case DeliveryKafka, DeliveryBroker:
	default:
		return &Error{Key: "mqtt.delivery", Msg: fmt.Sprintf("%q is not %s (delete a reading when the forwarder confirms that Kafka has it) or %s (at the broker's PUBACK)", m.Delivery, DeliveryKafka, DeliveryBroker)}
	}
	if m.ConfirmTimeout < time.Second {
		return &Error{Key: "mqtt.confirm_timeout", Msg: fmt.Sprintf("%v is too short (minimum 1s; the forwarder confirms about once a second)", m.ConfirmTimeout)}
	}
	if m.MaxUnconfirmed < 1 || m.MaxUnconfirmed > maxUnconfirmed {
		return &Error{Key: "mqtt.max_unconfirmed", Msg: fmt.Sprintf("%d is not between 1 and %d", m.MaxUnconfirmed, maxUnconfirmed)}
	}
	if m.ConfirmUnsigned && m.ConfirmKeysFile != "" {
		return &Error{Key: "mqtt.confirm_unsigned", Msg: "true together with mqtt.confirm_keys_file: with keys, unsigned confirmations are refused; remove one of the two"}
	}
	return nil
}

func (f *Fleet) validate() error {
	if f.Group != "" {
		if err := reading.CheckName(f.Group); err != nil {
			return &Error{Key: "fleet.group", Msg: err.Error()}
		}
	}
	if f.Grace < time.Second {
		return &Error{Key: "fleet.grace", Msg: fmt.Sprintf("%v is too short (minimum 1s; the agent waits at least 3 of the longest sensor interval anyway)", f.Grace)}
	}
	if f.KeysFile != "" {
		// Parsed here so a bad file is exit 2 at start, not a Pi that
		// silently refuses every document.
		if _, err := sign.LoadVerifier(f.KeysFile); errors.Is(err, sign.ErrKeyFile) {
			return &Error{Key: "fleet.keys_file", Msg: fmt.Sprintf("%s: %v (want PEM PUBLIC KEY blocks, as openssl pkey -pubout writes)", f.KeysFile, err), Err: err}
		} else if err != nil {
			return &Error{Key: "fleet.keys_file", Msg: fmt.Sprintf("cannot read %s", f.KeysFile), Err: errors.Unwrap(err)}
		}
	}
	return nil
}

func (c *Config) validateUpdate() error {
	u := c.Update
	if u.Deadline < 10*time.Second {
		return &Error{Key: "update.deadline", Msg: fmt.Sprintf("%v is too short (minimum 10s: a new version must connect and store a reading in it)", u.Deadline)}
	}
	if u.MaxSize < 1<<20 {
		return &Error{Key: "update.max_size", Msg: fmt.Sprintf("%v is too small (minimum 1MiB)", u.MaxSize)}
	}
	if u.KeysFile == "" {
		return nil
	}
	if _, err := sign.LoadVerifier(u.KeysFile); errors.Is(err, sign.ErrKeyFile) {
		return &Error{Key: "update.keys_file", Msg: fmt.Sprintf("%s: %v (want the release keys' PEM PUBLIC KEY blocks)", u.KeysFile, err), Err: err}
	} else if err != nil {
		return &Error{Key: "update.keys_file", Msg: fmt.Sprintf("cannot read %s", u.KeysFile), Err: errors.Unwrap(err)}
	}
	if c.Fleet.KeysFile == "" {
		return &Error{Key: "fleet.keys_file", Msg: "is needed with update.keys_file: the fleet key signs the update offers"}
	}
	if c.Fleet.Group == "" {
		return &Error{Key: "fleet.group", Msg: "is needed with update.keys_file: updates are offered per group"}
	}
	if u.CAFile != "" {
		if _, err := tlsconf.Client(u.CAFile); err != nil {
			return &Error{Key: "update.ca_file", Msg: fmt.Sprintf("%s: %v", u.CAFile, err), Err: err}
		}
	}
	if !filepath.IsAbs(c.UpdateDir()) {
		return &Error{Key: "update.dir", Msg: fmt.Sprintf("%q is not an absolute path", c.UpdateDir())}
	}
	return nil
}

// ReadUpdate reads only the update section (and buffer.path, which its
// dir defaults from) of the config at path, leniently: the launcher
// (agent/update) runs it before anything else, and a key this version does
// not know, or any other problem, is for the full Load that follows.
func ReadUpdate(path string) (Update, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Update{}, "", err
	}
	var c struct {
		Buffer struct {
			Path string `yaml:"path"`
		} `yaml:"buffer"`
		Update Update `yaml:"update"`
	}
	c.Buffer.Path = DefaultBufferPath
	c.Update = Default().Update
	if err := yaml.Unmarshal(b, &c); err != nil {
		return Update{}, "", fmt.Errorf("%s: %w", path, err)
	}
	full := Config{Buffer: Buffer{Path: c.Buffer.Path}, Update: c.Update}
	return c.Update, full.UpdateDir(), nil
}

// Overlay returns a copy of c with doc (a YAML or JSON mapping of config
// keys, as a remote document carries them) decoded over it, and the
// defaults of what it adds (a new sensor's interval) filled in. Keys
// unknown to the config are an error; validation is the caller's
// (Validate), after any further changes.
func (c *Config) Overlay(doc []byte) (*Config, error) {
	n := *c
	n.Sensors = append([]drivers.Spec(nil), c.Sensors...)
	n.Extra = nil
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&n); err != nil && !errors.Is(err, io.EOF) {
		return nil, &Error{Key: "yaml", Msg: err.Error()}
	}
	if len(n.Extra) > 0 {
		return nil, &Error{Key: sortedKeys(n.Extra)[0], Msg: "unknown key"}
	}
	n.applyDefaults()
	return &n, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
