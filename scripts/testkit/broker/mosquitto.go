package broker

import (
	"cmp"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// MosquittoConfig describes a mosquitto broker on one loopback listener.
type MosquittoConfig struct {
	Addr  string            // 127.0.0.1:port of the listener
	Dir   string            // where the config, the password file and persistence go
	PKI   *pki.PKI          // TLS on the listener when set
	Users map[string]string // a password file (mosquitto_passwd); nil allows anonymous clients
	// Logins, when set, put the shipped permission table in force instead:
	// the dynamic-security plugin with brokerauth.DynSec's file (Dir/dynsec.json).
	Logins []brokerauth.Login
	Prefix string // the table's topic prefix; default "sensors"
	// SysReader, with Logins, adds a login (Role ignored; client id = its
	// name) that may read $SYS/# and nothing else: a harness's own, beside
	// the table.
	SysReader brokerauth.Login
	// Persist keeps sessions and queued messages on disk (Dir/data), so a
	// restarted broker still holds the forwarders' backlog.
	Persist bool
	// LogFile makes mosquitto log everything (connections, subscriptions)
	// to this file, flushed line by line; empty logs errors and warnings to
	// stderr.
	LogFile string
	// Extra lines are appended; one whose key (first word) is a default
	// replaces that default ("max_inflight_messages 20").
	Extra []string
}

// Write writes mosquitto.conf (and the password file) into c.Dir and
// returns its path.
func (c MosquittoConfig) Write() (string, error) {
	_, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return "", fmt.Errorf("mosquitto listener %q: %w", c.Addr, err)
	}
	conf := []string{
		"per_listener_settings false",
		"listener " + port + " 127.0.0.1",
		// The forwarders' persistent sessions must hold the whole backlog of
		// an outage; mosquitto's default (1000) would drop the rest.
		"max_queued_messages 1000000",
		"max_queued_bytes 0",
		"max_inflight_messages 0",
	}
	// Run as ourselves: as root mosquitto would otherwise switch to the
	// "mosquitto" user, who cannot read our temp dir.
	if u, err := user.Current(); err == nil {
		conf = append(conf, "user "+u.Username)
	}
	switch {
	case c.Logins != nil:
		lines, err := c.writeDynSec()
		if err != nil {
			return "", err
		}
		for _, l := range lines {
			if !slices.Contains(conf, l) {
				conf = append(conf, l)
			}
		}
	case c.Users == nil:
		conf = append(conf, "allow_anonymous true")
	default:
		pw := filepath.Join(c.Dir, "passwd")
		if err := writePasswords(pw, c.Users); err != nil {
			return "", err
		}
		conf = append(conf, "allow_anonymous false", "password_file "+pw)
	}
	if c.PKI != nil {
		conf = append(conf, "cafile "+c.PKI.CAFile, "certfile "+c.PKI.CertFile, "keyfile "+c.PKI.KeyFile, "tls_version tlsv1.2")
	}
	if c.Persist {
		data := filepath.Join(c.Dir, "data") + "/"
		if err := os.MkdirAll(data, 0o755); err != nil {
			return "", err
		}
		conf = append(conf, "persistence true", "persistence_location "+data, "autosave_interval 30")
	} else {
		conf = append(conf, "persistence false")
	}
	if c.LogFile != "" {
		conf = append(conf, "log_dest file "+c.LogFile, "log_type error", "log_type warning", "log_type notice",
			"log_type information", "log_type subscribe", "connection_messages true",
			"log_timestamp_format %Y-%m-%dT%H:%M:%S")
	} else {
		conf = append(conf, "log_dest stderr", "log_type error", "log_type warning")
	}
	for _, x := range c.Extra {
		key, _, _ := strings.Cut(strings.TrimSpace(x), " ")
		conf = slices.DeleteFunc(conf, func(l string) bool { k, _, _ := strings.Cut(l, " "); return k == key && !isRepeatable(k) })
	}
	conf = append(conf, c.Extra...)
	path := filepath.Join(c.Dir, "mosquitto.conf")
	return path, os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o644)
}

// writeDynSec writes the dynamic-security plugin's file for c.Logins and
// returns the mosquitto.conf lines that load it.
func (c MosquittoConfig) writeDynSec() ([]string, error) {
	plugin, err := DynSecPlugin()
	if err != nil {
		return nil, err
	}
	prefix := cmp.Or(c.Prefix, "sensors")
	js, err := brokerauth.DynSec(prefix, c.Logins, rand.Reader)
	if err != nil {
		return nil, err
	}
	if c.SysReader.Name != "" {
		if js, err = addSysReader(js, c.SysReader); err != nil {
			return nil, err
		}
	}
	path := filepath.Join(c.Dir, "dynsec.json")
	if err := os.WriteFile(path, js, 0o600); err != nil {
		return nil, err
	}
	return brokerauth.MosquittoConf(plugin, path), nil
}

// addSysReader adds a client reading $SYS/# only to a dynamic-security
// file: the client DynSec writes for it as a monitoring login, given a
// role of its own instead.
func addSysReader(js []byte, l brokerauth.Login) ([]byte, error) {
	l.Role = brokerauth.Monitor
	one, err := brokerauth.DynSec("sensors", []brokerauth.Login{l}, rand.Reader)
	if err != nil {
		return nil, err
	}
	var f, sys map[string]any
	if err := json.Unmarshal(js, &f); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(one, &sys); err != nil {
		return nil, err
	}
	client := sys["clients"].([]any)[0].(map[string]any)
	client["roles"] = []any{map[string]any{"rolename": "harness:$SYS"}}
	f["clients"] = append(f["clients"].([]any), client)
	f["roles"] = append(f["roles"].([]any), map[string]any{"rolename": "harness:$SYS", "acls": []any{
		map[string]any{"acltype": "subscribePattern", "topic": "$SYS/#", "allow": true},
		map[string]any{"acltype": "publishClientReceive", "topic": "$SYS/#", "allow": true},
	}})
	return json.MarshalIndent(f, "", "\t")
}

// DynSecPlugin finds mosquitto's dynamic-security plugin.
func DynSecPlugin() (string, error) {
	for _, pattern := range brokerauth.DynSecPlugins {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return m[0], nil
		}
	}
	return "", fmt.Errorf("mosquitto's dynamic-security plugin is not in %v (apt-get install mosquitto)", brokerauth.DynSecPlugins)
}

// isRepeatable tells keys that may appear more than once.
func isRepeatable(key string) bool {
	return key == "log_type" || key == "log_dest" || key == "listener"
}

func writePasswords(path string, users map[string]string) error {
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		return fmt.Errorf("mosquitto_passwd is not installed (apt-get install mosquitto): %w", err)
	}
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	slices.Sort(names)
	for i, u := range names {
		args := []string{"-b", path, u, users[u]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("mosquitto_passwd: %w: %s", err, out)
		}
	}
	return nil
}

// Mosquitto is a mosquitto broker run for one test.
type Mosquitto struct {
	Addr string
	TLS  bool
}

// URL is ssl:// or tcp:// depending on TLS.
func (m *Mosquitto) URL() string {
	if m.TLS {
		return "ssl://" + m.Addr
	}
	return "tcp://" + m.Addr
}

// StartMosquitto runs mosquitto from Debian's package on a free loopback
// port until the test ends (Addr and Dir of c are filled in when empty). It
// skips the test when mosquitto is not installed (fails under CI=true).
// Its log is shown when the test fails.
func StartMosquitto(tb testing.TB, c MosquittoConfig) *Mosquitto {
	tb.Helper()
	testkit.NeedTool(tb, "mosquitto", "mosquitto")
	if c.Users != nil {
		testkit.NeedTool(tb, "mosquitto_passwd", "mosquitto")
	}
	if c.Dir == "" {
		c.Dir = tb.TempDir()
	}
	if c.Addr == "" {
		c.Addr = testkit.FreeAddr(tb)
	}
	path, err := c.Write()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("mosquitto", "-c", path)
	var logs testkit.LogBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if tb.Failed() {
			tb.Logf("mosquitto log:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		conn, err := net.DialTimeout("tcp", c.Addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return &Mosquitto{Addr: c.Addr, TLS: c.PKI != nil}
		}
		select {
		case <-done:
			tb.Fatalf("mosquitto exited before listening on %s:\n%s", c.Addr, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("mosquitto did not listen on %s: %v", c.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
