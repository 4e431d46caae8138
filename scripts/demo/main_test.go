package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// buildBins builds the real edge-agent and cloud-forwarder into a temp dir.
func buildBins(t *testing.T) string {
	t.Helper()
	return filepath.Dir(testkit.BuildT(t, "../../agent/cmd/edge-agent", "../../cloud/cmd/cloud-forwarder")[0])
}

// TestDemo runs the whole local pipeline for a few seconds and checks that
// every reading the agent produced reached Kafka or is still in its buffer.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the pipeline for 10 s")
	}
	bins := buildBins(t)
	var out bytes.Buffer
	o := Options{BinDir: bins, Sensors: 4, Interval: 250 * time.Millisecond, Duration: 10 * time.Second,
		Topic: "sensor-readings", DeviceID: "demo-test"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := Demo(ctx, o, &out)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	sum.Print(&out)
	t.Logf("summary: produced %d delivered %d duplicates %d buffered %d missing %d",
		sum.Produced, sum.Delivered, sum.Duplicates, sum.Buffered, sum.Missing)
	// 4 sensors at 4 Hz for 10 s is 160 readings; allow for a slow start.
	if sum.Delivered < 40 {
		t.Fatalf("only %d readings reached Kafka:\n%s", sum.Delivered, out.String())
	}
	if sum.Missing != 0 || sum.Undecoded != 0 {
		t.Fatalf("missing %d, undecodable %d:\n%s", sum.Missing, sum.Undecoded, out.String())
	}
	if uint64(sum.Delivered+sum.Buffered) != sum.Produced {
		t.Fatalf("delivered %d + buffered %d != produced %d", sum.Delivered, sum.Buffered, sum.Produced)
	}
	// The agent has the forwarder's public key: only signed confirmations
	// delete, so a broken signature would leave what Kafka has in the buffer.
	if 2*uint64(sum.Unconfirmed) > sum.Produced {
		t.Fatalf("%d of %d readings in Kafka and still buffered: the signed confirmations were not accepted\n%s", sum.Unconfirmed, sum.Produced, out.String())
	}
	// The fleet view: the real `cloud-forwarder fleet status`, listing the demo's Pi.
	if !strings.Contains(out.String(), "as `cloud-forwarder fleet status` shows it:\nDEVICE") ||
		!strings.Contains(out.String(), "\ndemo-test ") {
		t.Fatalf("no fleet view listing demo-test in the output:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "demo-test/sim-4") {
		t.Fatalf("no line for sim-4 in the output:\n%s", out.String())
	}
}

func TestMissingBinaries(t *testing.T) {
	_, err := Demo(context.Background(), Options{BinDir: filepath.Join(t.TempDir(), "nope")}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("want an error pointing at make build, got %v", err)
	}
}

func TestAgentConfig(t *testing.T) {
	c := agentConfig(Options{DeviceID: "d", Sensors: 2, Interval: time.Second}, "/tmp/x", "127.0.0.1:1883", "/tmp/x/confirm-keys.pem")
	for _, want := range []string{
		"device_id: d\n", "  - {name: sim-1, driver: sim, interval: 1s}\n", "  - {name: sim-2, driver: sim, interval: 1s}\n",
		"  path: /tmp/x/buffer.db\n", "  url: tcp://127.0.0.1:1883\n", "  confirm_keys_file: /tmp/x/confirm-keys.pem\n",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
}
