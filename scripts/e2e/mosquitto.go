package main

import (
	"context"
	"fmt"
	"os"
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
// password file, an ACL file, on-disk persistence and a queue of at most
// queue messages per offline session, and returns the (not yet started)
// broker process.
func newMosquitto(dir, addr string, certs *pki.PKI, users []mqttUser, acl []string, queue int) (*proc.Proc, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, fmt.Errorf("mosquitto is not installed (apt-get install mosquitto mosquitto-clients): %w", err)
	}
	pw := map[string]string{}
	for _, u := range users {
		pw[u.name] = u.password
	}
	aclPath := filepath.Join(dir, "acl")
	if err := os.WriteFile(aclPath, []byte(strings.Join(acl, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	confPath, err := broker.MosquittoConfig{
		Addr: addr, Dir: dir, PKI: certs, Users: pw,
		Persist: true,
		// A file log is flushed line by line (stdout to a file is not), so
		// the harness can watch it for the forwarders' re-subscribe.
		LogFile: brokerLog(dir),
		Extra: []string{
			"acl_file " + aclPath,
			// Real brokers cap what they queue for an offline or slow
			// session (HiveMQ and EMQX at 1000, mosquitto's default too)
			// and discard the rest: with delivery=kafka the device's
			// buffer, not the broker, keeps every reading until Kafka has it.
			fmt.Sprintf("max_queued_messages %d", queue),
			"max_inflight_messages 1000",
			// A reading is at most 64 KiB; refuse bigger packets at the
			// broker (MQTT 3.1.1 allows 256 MiB, which a client would buffer).
			"max_packet_size 66560",
			"sys_interval 1", // the fleet run counts PUBLISH packets from $SYS
		},
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
