package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/proc"
)

// newMosquitto writes a broker config for a TLS listener on addr with the
// shipped permission table for logins (mosquitto's dynamic-security
// plugin, what docs/FORWARDER.md tells production to run) plus the
// harness's own $SYS reader, on-disk persistence and a queue of at most
// queue messages per offline session, and returns the (not yet started)
// broker process.
func newMosquitto(dir, addr string, certs *pki.PKI, logins []brokerauth.Login, queue int) (*proc.Proc, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, fmt.Errorf("mosquitto is not installed (apt-get install mosquitto mosquitto-clients): %w", err)
	}
	confPath, err := broker.MosquittoConfig{
		Addr: addr, Dir: dir, PKI: certs, Logins: logins,
		SysReader: brokerauth.Login{Name: sysUser, Password: sysPass},
		Persist:   true,
		// A file log is flushed line by line (stdout to a file is not), so
		// the harness can watch it for the forwarders' re-subscribe.
		LogFile: brokerLog(dir),
		Extra: []string{
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
