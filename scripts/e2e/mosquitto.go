package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// mqttUser is one account in the broker's password file.
type mqttUser struct{ name, password string }

// newMosquitto writes a broker config for a TLS listener on port with a
// password file and on-disk persistence, and returns the (not yet started)
// broker process.
func newMosquitto(dir string, port int, certs *pki.PKI, users []mqttUser) (*proc, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, fmt.Errorf("mosquitto is not installed (apt-get install mosquitto mosquitto-clients): %w", err)
	}
	passwdBin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		return nil, fmt.Errorf("mosquitto_passwd is not installed (apt-get install mosquitto): %w", err)
	}
	passwd := filepath.Join(dir, "passwd")
	for i, u := range users {
		args := []string{"-b", passwd, u.name, u.password}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(passwdBin, args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("mosquitto_passwd: %w: %s", err, out)
		}
	}
	persist := filepath.Join(dir, "data") + "/"
	if err := os.MkdirAll(persist, 0o755); err != nil {
		return nil, err
	}
	// Run as ourselves: as root mosquitto would otherwise switch to the
	// "mosquitto" user, who cannot read our temp dir.
	runAs := "root"
	if u, err := user.Current(); err == nil {
		runAs = u.Username
	}
	conf := strings.Join([]string{
		"per_listener_settings false",
		"user " + runAs,
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"cafile " + certs.CAFile,
		"certfile " + certs.CertFile,
		"keyfile " + certs.KeyFile,
		"allow_anonymous false",
		"password_file " + passwd,
		"persistence true",
		"persistence_location " + persist,
		"autosave_interval 30",
		// The forwarders' persistent sessions must hold the whole backlog
		// of an outage; mosquitto's default (1000) would drop the rest.
		"max_queued_messages 1000000",
		"max_inflight_messages 1000",
		// A file log is flushed line by line (stdout to a file is not),
		// so the harness can watch it for the forwarders' re-subscribe.
		"log_dest file " + brokerLog(dir),
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
		"log_type subscribe", // the harness waits for the forwarders' SUBSCRIBE after a restart
		"connection_messages true",
		"log_timestamp_format %Y-%m-%dT%H:%M:%S",
		"",
	}, "\n")
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return &proc{name: "mosquitto", argv: []string{bin, "-c", confPath}, logPath: filepath.Join(dir, "mosquitto.log")}, nil
}

// brokerLog is the log file newMosquitto configures.
func brokerLog(dir string) string {
	return filepath.Join(dir, "mosquitto-broker.log")
}

// mosquittoVersion is the first line of `mosquitto -h`.
func mosquittoVersion(ctx context.Context) string {
	out, _ := exec.CommandContext(ctx, "mosquitto", "-h").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
