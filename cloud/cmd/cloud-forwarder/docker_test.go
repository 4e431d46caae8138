package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// skipOrFail skips when a tool is missing, except in CI where it must be there.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but %s", why)
	}
	t.Skip(why)
}

// TestDockerImage builds the FROM scratch image around the test binary and
// runs it on the host network against a TLS mochi broker and a TLS+SASL
// kfake started here: readings must arrive in Kafka.
func TestDockerImage(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		skipOrFail(t, "docker is not installed")
	}
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		skipOrFail(t, "docker info failed (no engine or no permission): "+firstLine(out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dir := t.TempDir()
	bin, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cloud-forwarder"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	tag := "cloud-forwarder:test-" + strconv.Itoa(os.Getpid())
	build := exec.CommandContext(ctx, "docker", "build", "--quiet", "-f", filepath.Join("..", "..", "Dockerfile"), "-t", tag, dir)
	build.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", tag, "--format", "{{.Config.User}} {{.Config.ExposedPorts}}").Output()
	if err != nil || string(out) != "65532:65532 map[9102/tcp:{} 9103/tcp:{}]\n" {
		t.Fatalf("image config: %q %v", out, err)
	}

	certs := pki.New(t)
	b := stack.StartBroker(t, certs, stack.BrokerOptions{})
	k := stack.StartKafka(t, certs)
	env := stack.Env(b, k, certs, "fwd-docker")
	env["HIVEMQ_CA_FILE"], env["KAFKA_CA_FILE"] = "/ca.pem", "/ca.pem"
	addr := testkit.FreeAddr(t)
	env["FORWARDER_LISTEN"] = addr
	name := "cloud-forwarder-test-" + strconv.Itoa(os.Getpid())
	args := []string{"run", "--rm", "--name", name, "--network", "host", "-v", certs.CAFile + ":/ca.pem:ro"}
	for k, v := range env {
		args = append(args, "-e", k+"="+v)
	}
	args = append(args, tag)
	run := exec.Command("docker", args...)
	logs := &testkit.LogBuffer{}
	run.Stdout, run.Stderr = logs, logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		_ = exec.Command("docker", "stop", "-t", "10", name).Run()
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = exec.Command("docker", "rm", "-f", name).Run()
		}
		if t.Failed() {
			t.Logf("container log:\n%s", logs)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("container not ready:\n%s", logs)
		}
		select {
		case err := <-exited:
			t.Fatalf("container exited: %v\n%s", err, logs)
		case <-time.After(100 * time.Millisecond):
		}
	}
	devs := stack.Devices(4)
	pub := stack.NewPublisher(t, b, certs, "pub-docker")
	pub.PublishReadings(t, devs, 1, 25)
	recs := k.ReadN(t, stack.Topic, 100, 30*time.Second, 100*time.Millisecond)
	if len(recs) != 100 {
		t.Fatalf("%d of 100 readings arrived from the container", len(recs))
	}
	for _, r := range recs {
		if r.Headers["forwarder_id"] != "fwd-docker" {
			t.Fatalf("forwarder_id %q", r.Headers["forwarder_id"])
		}
	}
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}
