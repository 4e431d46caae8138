package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/proc"
)

// mqttUser is one account in the broker's password file.
type mqttUser struct{ name, password string }

// newMosquitto writes a broker config for a TLS listener on addr with a
// password file and on-disk persistence, and returns the (not yet started)
// broker process.
func newMosquitto(dir, addr string, certs *pki.PKI, users []mqttUser) (*proc.Proc, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, fmt.Errorf("mosquitto is not installed (apt-get install mosquitto mosquitto-clients): %w", err)
	}
	pw := map[string]string{}
	for _, u := range users {
		pw[u.name] = u.password
	}
	confPath, err := broker.MosquittoConfig{
		Addr: addr, Dir: dir, PKI: certs, Users: pw,
		Persist: true,
		// A file log is flushed line by line (stdout to a file is not), so
		// the harness can watch it for the forwarders' re-subscribe.
		LogFile: brokerLog(dir),
		Extra:   []string{"max_inflight_messages 1000"},
	}.Write()
	if err != nil {
		return nil, err
	}
	return &proc.Proc{Name: "mosquitto", Argv: []string{bin, "-c", confPath}, LogPath: filepath.Join(dir, "mosquitto.log")}, nil
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
