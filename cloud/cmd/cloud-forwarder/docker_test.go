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

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
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
// kfake started here: readings must arrive in Kafka. Then the same image
// runs `sink` against a throwaway PostgreSQL: every reading becomes a row.
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
	runContainer(t, tag, "cloud-forwarder-test-"+strconv.Itoa(os.Getpid()), addr, env, certs.CAFile)
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

	// The same image runs the sink: the 100 readings become 100 rows.
	pg := pgcluster.ForTest(t)
	dbURL, err := pg.CreateDatabase(ctx, "docker")
	if err != nil {
		t.Fatal(err)
	}
	sinkAddr := testkit.FreeAddr(t)
	runContainer(t, tag, "cloud-forwarder-sink-test-"+strconv.Itoa(os.Getpid()), sinkAddr, map[string]string{
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": env["CONFLUENT_BOOTSTRAP_SERVER_SASL"],
		"CONFLUENT_API_KEY":               env["CONFLUENT_API_KEY"],
		"CONFLUENT_API_SECRET":            env["CONFLUENT_API_SECRET"],
		"KAFKA_CA_FILE":                   "/ca.pem",
		"DATABASE_URL":                    dbURL,
		"SINK_LISTEN":                     sinkAddr,
	}, certs.CAFile, "sink")
	testkit.WaitFor(t, "100 rows written by the sink container", 30*time.Second, func() bool {
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var n int
		return conn.QueryRow(ctx, "SELECT count(*) FROM readings").Scan(&n) == nil && n == 100
	})
}

// runContainer runs the image with env (and the CA at /ca.pem) on the host
// network until the test ends, and waits until /readyz at addr answers 200.
func runContainer(t *testing.T, tag, name, addr string, env map[string]string, caFile string, cmd ...string) {
	t.Helper()
	args := []string{"run", "--rm", "--name", name, "--network", "host", "-v", caFile + ":/ca.pem:ro"}
	for k, v := range env {
		args = append(args, "-e", k+"="+v)
	}
	args = append(append(args, tag), cmd...)
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
			t.Logf("container %s log:\n%s", name, logs)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not ready:\n%s", name, logs)
		}
		select {
		case err := <-exited:
			t.Fatalf("container %s exited: %v\n%s", name, err, logs)
		case <-time.After(100 * time.Millisecond):
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
