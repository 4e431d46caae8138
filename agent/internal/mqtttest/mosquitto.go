package mqtttest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// NeedTool skips the test when a program is missing, or fails it under
// CI=true, where the CI script installs it.
func NeedTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI installs it; see .ci/run)", n)
			}
			t.Skipf("skipping: %s not installed (apt-get install mosquitto mosquitto-clients)", n)
		}
	}
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

// StartMosquitto runs mosquitto on a free loopback port with TLS (when ca
// is not nil) and a password file (when users is not nil, made with
// mosquitto_passwd -b). It is killed at cleanup.
func StartMosquitto(t testing.TB, ca *pki.PKI, users map[string]string) *Mosquitto {
	t.Helper()
	NeedTool(t, "mosquitto", "mosquitto_passwd")
	dir := t.TempDir()
	m := &Mosquitto{Addr: freeAddr(t), TLS: ca != nil}
	_, port, _ := net.SplitHostPort(m.Addr)
	conf := []string{
		"listener " + port + " 127.0.0.1",
		"persistence false",
		"max_queued_messages 1000000",
		"max_inflight_messages 0",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
	}
	if u, err := user.Current(); err == nil {
		conf = append(conf, "user "+u.Username) // as root it would switch to "mosquitto" and lose our files
	}
	if users == nil {
		conf = append(conf, "allow_anonymous true")
	} else {
		pw := filepath.Join(dir, "passwd")
		first := true
		for u, p := range users {
			args := []string{"-b", pw, u, p}
			if first {
				args = append([]string{"-c"}, args...)
				first = false
			}
			if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v: %s", err, out)
			}
		}
		conf = append(conf, "allow_anonymous false", "password_file "+pw)
	}
	if ca != nil {
		conf = append(conf, "cafile "+ca.CAFile, "certfile "+ca.CertFile, "keyfile "+ca.KeyFile, "tls_version tlsv1.2")
	}
	cf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(cf, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mosquitto", "-c", cf)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.DialTimeout("tcp", m.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return m
		}
		if time.Now().After(deadline) {
			t.Fatal(fmt.Errorf("mosquitto did not listen on %s: %w", m.Addr, err))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
