package scripts

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// The README promises that every command it shows exists. These tests hold
// it to that against the Makefile, the real binaries and their metrics.

func readme(t *testing.T) string {
	t.Helper()
	return read(t, "../README.md") + read(t, "../docs/INSTALL.md")
}

func TestReadmeMakeTargets(t *testing.T) {
	mk := read(t, "../Makefile")
	for _, m := range regexp.MustCompile("make ([a-z][a-z0-9-]*)").FindAllStringSubmatch(readme(t), -1) {
		if m[1] == "sure" { // prose
			continue
		}
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(m[1]) + `:.*## `).MatchString(mk) {
			t.Errorf("README shows `make %s`, but the Makefile has no documented target %q", m[1], m[1])
		}
	}
}

func TestReadmePaths(t *testing.T) {
	for _, m := range regexp.MustCompile(`\]\(((?:docs|systemd|scripts)/[^)#]+)`).FindAllStringSubmatch(readme(t), -1) {
		if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
			t.Errorf("README links %s: %v", m[1], err)
		}
	}
	for _, m := range regexp.MustCompile(`scripts/([a-z-]+\.sh)`).FindAllStringSubmatch(readme(t), -1) {
		fi, err := os.Stat(m[1])
		if err != nil || fi.Mode().Perm()&0o100 == 0 {
			t.Errorf("README shows scripts/%s: missing or not executable (%v)", m[1], err)
		}
	}
}

func buildBins(t *testing.T) string {
	t.Helper()
	return filepath.Dir(testkit.BuildT(t, "../agent/cmd/edge-agent", "../cloud/cmd/cloud-forwarder")[0])
}

// TestReadmeCommands runs `--help` of every edge-agent and cloud-forwarder
// subcommand the docs show and checks each flag they use is accepted there.
func TestReadmeCommands(t *testing.T) {
	bins := buildBins(t)
	line := regexp.MustCompile(`(?m)(?:^|sudo(?: -u edge-agent)? |\x60)(edge-agent|cloud-forwarder) ([a-z][^\x60\n#|>]*)`)
	checked := 0
	for _, m := range line.FindAllStringSubmatch(readme(t), -1) {
		bin, rest := m[1], strings.Fields(m[2])
		var sub, flags []string
		for _, w := range rest {
			switch {
			case strings.HasPrefix(w, "-"):
				flags = append(flags, strings.TrimLeft(strings.SplitN(w, "=", 2)[0], "-"))
			case len(flags) == 0 && regexp.MustCompile(`^[a-z]+$`).MatchString(w) && len(sub) < 2:
				sub = append(sub, w)
			}
		}
		if len(sub) == 0 || sub[0] == "sensor" || sub[0] == "reads" || sub[0] == "is" || sub[0] == "runs" {
			continue // prose such as "edge-agent sensors reads ..."
		}
		args := append(append([]string{}, sub...), "--help")
		out, _ := exec.Command(filepath.Join(bins, bin), args...).CombinedOutput()
		help := string(out)
		if strings.Contains(help, "unknown command") {
			t.Errorf("docs show `%s %s`, which is not a command:\n%s", bin, strings.Join(sub, " "), help)
			continue
		}
		if len(sub) == 2 && sub[0] == "buffer" {
			// buffer's subcommands share one usage text.
			if !strings.Contains(help, "  "+sub[1]) {
				t.Errorf("docs show `edge-agent buffer %s`, not in its usage:\n%s", sub[1], help)
			}
		}
		for _, f := range flags {
			if f == "help" {
				continue
			}
			if !regexp.MustCompile(`(^|[\s\[(|])--?` + regexp.QuoteMeta(f) + `\b`).MatchString(help) {
				t.Errorf("docs show `%s %s --%s`, but its help has no such flag:\n%s", bin, strings.Join(sub, " "), f, help)
			}
		}
		checked++
	}
	if checked < 10 {
		t.Fatalf("only %d commands found in the docs; the pattern is broken", checked)
	}
	t.Logf("%d commands from the docs checked against the binaries", checked)
}

// TestReadmeEnvAndMetrics checks every environment variable and metric
// name the README shows: forwarder variables against `cloud-forwarder
// help`, agent metrics against a running agent's /metrics.
func TestReadmeEnvAndMetrics(t *testing.T) {
	doc := readme(t)
	bins := buildBins(t)
	help, _ := exec.Command(filepath.Join(bins, "cloud-forwarder"), "help").CombinedOutput()
	for _, v := range regexp.MustCompile(`\b(?:HIVEMQ|KAFKA|CONFLUENT|FORWARDER|MQTT)_[A-Z_]+\b`).FindAllString(doc, -1) {
		if !strings.Contains(string(help), "  "+v+" ") {
			t.Errorf("README names %s, which `cloud-forwarder help` does not list", v)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	write(t, cfg, fmt.Sprintf("device_id: readme\nsensors:\n  - {name: sim-1, driver: sim, interval: 100ms}\n"+
		"buffer:\n  path: %s/b.db\nmqtt:\n  url: tcp://127.0.0.1:1\nstatus_listen: %s\n", dir, addr), 0o644)
	agent := exec.Command(filepath.Join(bins, "edge-agent"), "run", "--config", cfg)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	var metrics string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if metrics = string(b); strings.Contains(metrics, "edge_agent_readings_total{") {
			break
		}
	}
	for _, m := range regexp.MustCompile(`\bedge_agent_[a-z_]+`).FindAllString(doc, -1) {
		if !strings.Contains(metrics, "\n"+m) && !strings.Contains(metrics, "# TYPE "+m+" ") {
			t.Errorf("README names metric %s, which the agent's /metrics does not have", m)
		}
	}
	var fwdSrc strings.Builder
	_ = filepath.WalkDir("../cloud", func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			fwdSrc.WriteString(read(t, p))
		}
		return nil
	})
	for _, m := range regexp.MustCompile(`\bforwarder_[a-z_]+`).FindAllString(doc, -1) {
		if m == "forwarder_id" {
			continue // a Kafka header, not a metric
		}
		if !strings.Contains(fwdSrc.String(), `"`+m+`"`) {
			t.Errorf("README names metric %s, which cloud/ does not define", m)
		}
	}
}

// TestReadmeConfig loads every YAML block of the README with the agent's
// config loader and Strict (what `edge-agent config check` runs).
func TestReadmeConfig(t *testing.T) {
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(read(t, "../README.md"), -1)
	if len(blocks) == 0 {
		t.Fatal("no yaml block in the README")
	}
	getenv := func(k string) string {
		if k == config.PasswordEnv {
			return "from-env"
		}
		return ""
	}
	keys := pki.NewConfirmKey(t).PubFile // stands in for the Pi's /etc/edge-agent/confirm-keys.pem
	for i, b := range blocks {
		y := strings.ReplaceAll(b[1], "/etc/edge-agent/confirm-keys.pem", keys)
		c, err := config.Parse([]byte(y), getenv)
		if err == nil {
			err = c.Strict() // what config check adds
		}
		if err != nil {
			t.Errorf("README yaml block %d: %v\n%s", i+1, err, b[1])
		}
	}
}

// TestReadmeWire decodes the README's wire-format example with the strict
// decoder that the forwarder uses.
func TestReadmeWire(t *testing.T) {
	m := regexp.MustCompile("(?s)```json\n(.*?)```").FindStringSubmatch(read(t, "../README.md"))
	if m == nil {
		t.Fatal("no json block in the README")
	}
	r, err := reading.Decode([]byte(strings.ReplaceAll(m[1], "\n", "")))
	if err != nil {
		t.Fatalf("README's reading does not decode: %v\n%s", err, m[1])
	}
	if r.DeviceID == "" || r.Seq == 0 || len(r.Values) != 3 {
		t.Fatalf("decoded %+v", r)
	}
}
