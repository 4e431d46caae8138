package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/buffer/secret"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/buffer/tlsconf"
	"github.com/edgepipe/sensorpipe/cloud/config"
)

// Vars are the environment variables of `cloud-forwarder fleet`.
var Vars = []struct{ Name, Default, Meaning string }{
	{"FLEET_MQTT_URL", "HIVEMQ_URL", "broker URL of the operator login, ssl://host:8883 (tcp:// only to loopback or with FLEET_INSECURE=true)"},
	{"FLEET_USERNAME", "", "the operator login (may publish config and commands, read results)"},
	{"FLEET_PASSWORD", "", "its password, or FLEET_PASSWORD_FILE naming a file that holds it"},
	{"FLEET_CA_FILE", "HIVEMQ_CA_FILE", "CA bundle for a private broker"},
	{"FLEET_INSECURE", "false", "allow plaintext tcp:// to a non-loopback broker"},
	{"FLEET_KEY_FILE", "", "the operator's Ed25519 private key (PEM PKCS#8) that signs documents, commands and update offers"},
	{"RELEASE_KEY_FILE", "", "fleet release: the release key (Ed25519 PEM PKCS#8) that signs manifests; not the fleet key"},
	{"FLEET_TOPIC_PREFIX", "sensors", "the devices' mqtt.topic_prefix"},
	{"DATABASE_URL", "", "fleet status: the sink's database (libpq URL, checked as the sink checks it), or DATABASE_URL_FILE; unset: read the broker"},
	{"FLEET_STATUS_USERNAME", "FLEET_USERNAME", "fleet status: the monitoring login (reads every device's status); FLEET_STATUS_PASSWORD or FLEET_STATUS_PASSWORD_FILE"},
}

// env is the tool's settings, read once.
type env struct {
	URL      string
	TLS      *tls.Config // nil: plaintext
	Username string
	Password secret.Secret
	KeyFile  string
	Prefix   string
}

func loadEnv(getenv func(string) string) (*env, error) {
	e := &env{Username: getenv("FLEET_USERNAME"), KeyFile: getenv("FLEET_KEY_FILE"), Prefix: getenv("FLEET_TOPIC_PREFIX")}
	if e.Prefix == "" {
		e.Prefix = "sensors"
	}
	if err := reading.CheckName(e.Prefix); err != nil {
		return nil, cmdline.Usagef("FLEET_TOPIC_PREFIX: %v", err)
	}
	raw, key := getenv("FLEET_MQTT_URL"), "FLEET_MQTT_URL"
	if raw == "" {
		raw, key = getenv("HIVEMQ_URL"), "HIVEMQ_URL"
	}
	if raw == "" {
		return nil, cmdline.Usagef("FLEET_MQTT_URL: required (ssl://YOUR-CLUSTER.hivemq.cloud:8883)")
	}
	insecure, _ := strconv.ParseBool(getenv("FLEET_INSECURE"))
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil {
		// Not echoed: it may hold a password.
		return nil, cmdline.Usagef("%s: not a URL like ssl://host:8883 without credentials", key)
	}
	isTLS, err := mqttconn.TLS(u.Scheme)
	if err != nil {
		return nil, cmdline.Usagef("%s: scheme %q is not ssl or tcp", key, u.Scheme)
	}
	if !isTLS && !insecure && !mqttconn.IsLoopback(u.Hostname()) {
		return nil, cmdline.Usagef("%s: plaintext tcp:// only to loopback or with FLEET_INSECURE=true; use ssl://", key)
	}
	e.URL = "tcp://" + u.Host
	if isTLS {
		e.URL = "ssl://" + u.Host
		ca := getenv("FLEET_CA_FILE")
		if ca == "" {
			ca = getenv("HIVEMQ_CA_FILE")
		}
		if e.TLS, err = tlsconf.Client(ca); err != nil {
			return nil, cmdline.Usagef("FLEET_CA_FILE: %v", err)
		}
	}
	if e.Password, err = config.SecretFromEnv(getenv, "FLEET_PASSWORD"); err != nil {
		return nil, err
	}
	return e, nil
}

// signingSession loads the operator's environment and key (keyFile, from
// --key, overrides FLEET_KEY_FILE) and connects: how every command that
// publishes signed messages starts. The caller closes the client.
func signingSession(ctx context.Context, getenv func(string) string, keyFile string, wait time.Duration) (*env, *sign.Signer, *client, error) {
	e, err := loadEnv(getenv)
	if err != nil {
		return nil, nil, nil, err
	}
	if keyFile != "" {
		e.KeyFile = keyFile
	}
	signer, err := e.signer()
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := dial(ctx, e, wait)
	if err != nil {
		return nil, nil, nil, err
	}
	return e, signer, c, nil
}

// signer loads the operator's key (FLEET_KEY_FILE, or --key).
func (e *env) signer() (*sign.Signer, error) {
	if e.KeyFile == "" {
		return nil, cmdline.Usagef("FLEET_KEY_FILE: required to sign (the operator's Ed25519 private key; see cloud-forwarder fleet keygen)")
	}
	s, err := sign.LoadSigner(e.KeyFile)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return nil, cmdline.Usagef("FLEET_KEY_FILE: cannot read %s: %v", e.KeyFile, errors.Unwrap(err))
	}
	if err != nil {
		// The key's content is never echoed.
		return nil, cmdline.Usagef("FLEET_KEY_FILE: %s is not an Ed25519 private key in PEM PKCS#8 (openssl genpkey -algorithm ed25519)", e.KeyFile)
	}
	return s, nil
}

func (e *env) String() string { return fmt.Sprintf("%s as %q", e.URL, e.Username) }
