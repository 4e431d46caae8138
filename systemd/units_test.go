package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// maxExposure is the target for `systemd-analyze security`.
const maxExposure = 3.0

func needAnalyze(t *testing.T) string {
	t.Helper()
	return testkit.NeedTool(t, "systemd-analyze", "systemd")
}

// unitCopy writes unit into a temp dir with its ExecStart binary replaced by
// an executable that exists, since verify rejects a missing binary.
func unitCopy(t *testing.T, unit, bin string) string {
	t.Helper()
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, filepath.Base(bin))
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "ExecStart="+bin+" ") {
		t.Fatalf("%s: ExecStart does not start with %s", unit, bin)
	}
	s := strings.ReplaceAll(string(b), "ExecStart="+bin, "ExecStart="+fake)
	out := filepath.Join(dir, filepath.Base(unit))
	if err := os.WriteFile(out, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

func TestUnits(t *testing.T) {
	analyze := needAnalyze(t)
	for _, tc := range []struct{ unit, bin string }{
		{"edge-agent.service", "/usr/bin/edge-agent"},
		{"edge-agent-update-guard.service", "/usr/bin/edge-agent"},
		{"cloud-forwarder.service", "/usr/local/bin/cloud-forwarder"},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			u := unitCopy(t, tc.unit, tc.bin)
			out, err := exec.Command(analyze, "verify", u).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", tc.unit, err, out)
			}
			out, err = exec.Command(analyze, "security", "--offline=true", "--no-pager", u).CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze security %s: %v\n%s", tc.unit, err, out)
			}
			m := exposureRE.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no exposure level in:\n%s", out)
			}
			e, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("%s: systemd-analyze security exposure %.1f", tc.unit, e)
			if e >= maxExposure {
				t.Fatalf("%s: exposure %.1f, want < %.1f:\n%s", tc.unit, e, maxExposure, out)
			}
		})
	}
}

// TestGuardTimer verifies the guard's timer next to its service, and pins
// what the rollback relies on: the guard runs as the agent's user (it owns
// state.json and signals the agent) every 15 s, and the agent's unit
// restarts whatever way it stopped.
func TestGuardTimer(t *testing.T) {
	analyze := needAnalyze(t)
	svc := unitCopy(t, "edge-agent-update-guard.service", "/usr/bin/edge-agent")
	b, err := os.ReadFile("edge-agent-update-guard.timer")
	if err != nil {
		t.Fatal(err)
	}
	timer := filepath.Join(filepath.Dir(svc), "edge-agent-update-guard.timer")
	if err := os.WriteFile(timer, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", timer, svc).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	if v := unitValue(string(b), "OnUnitActiveSec"); v != "15s" {
		t.Errorf("OnUnitActiveSec=%q, want 15s", v)
	}
	g, err := os.ReadFile("edge-agent-update-guard.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=oneshot\n", "User=edge-agent\n", "StateDirectory=edge-agent\n", "PrivateNetwork=yes\n",
		"ExecStart=/usr/bin/edge-agent update guard --config /etc/edge-agent/config.yaml\n"} {
		if !strings.Contains(string(g), want) {
			t.Errorf("edge-agent-update-guard.service lacks %q", want)
		}
	}
}

// TestAgentUnitContract pins the settings other parts rely on: the .deb and
// the scripts substitute ExecStart's path, and the agent uses sd_notify, the
// watchdog and the state directory.
func TestAgentUnitContract(t *testing.T) {
	b, err := os.ReadFile("edge-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID\n", "WatchdogSec=30", "Restart=always", "StartLimitIntervalSec=0\n",
		"StateDirectory=edge-agent", "ConfigurationDirectory=edge-agent", "User=edge-agent",
		"SupplementaryGroups=i2c gpio", "DevicePolicy=closed", "DeviceAllow=char-i2c rw",
		"ReadOnlyPaths=/sys", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
		"PrivateTmp=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter=@system-service", "SystemCallFilter=adjtimex\n", "MemoryMax=64M",
		"ExecStart=/usr/bin/edge-agent run --config /etc/edge-agent/config.yaml\n",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("edge-agent.service lacks %q", want)
		}
	}
}

// TestConfigs loads both shipped configs with the agent's own loader, which
// is what `edge-agent config check` runs.
func TestConfigs(t *testing.T) {
	for _, tc := range []struct {
		file    string
		sensors int
	}{
		{"edge-agent.config.yaml", 1},
		{"config.example.yaml", 3},
	} {
		t.Run(tc.file, func(t *testing.T) {
			getenv := func(k string) string {
				if k == config.PasswordEnv {
					return "from-env"
				}
				return ""
			}
			c, err := config.Parse(shippedConfig(t, tc.file), getenv)
			if err == nil {
				err = c.Strict() // what config check adds
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Sensors) != tc.sensors {
				t.Fatalf("%d sensors, want %d", len(c.Sensors), tc.sensors)
			}
		})
	}
}

// shippedConfig reads a shipped config with a test key standing in for
// the Pi's /etc/edge-agent/confirm-keys.pem, which the install scripts
// place (and which every shipped config must read).
func shippedConfig(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "confirm_keys_file: /etc/edge-agent/confirm-keys.pem") {
		t.Errorf("%s does not set mqtt.confirm_keys_file to where the install scripts put the keys", file)
	}
	return []byte(strings.ReplaceAll(string(b), "/etc/edge-agent/confirm-keys.pem", pki.NewConfirmKey(t).PubFile))
}

// TestExampleOptionalSensors: the commented-out sensors of the example
// config are valid too, once uncommented.
func TestExampleOptionalSensors(t *testing.T) {
	b := shippedConfig(t, "config.example.yaml")
	uncommented := strings.ReplaceAll(string(b), "  #- {name:", "  - {name:")
	n := strings.Count(string(b), "  #- {name:")
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(uncommented), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(p, func(k string) string {
		if k == config.PasswordEnv {
			return "from-env"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || len(c.Sensors) != 3+n {
		t.Fatalf("%d sensors with %d uncommented, want %d", len(c.Sensors), n, 3+n)
	}
}

// unitValue returns the last value of key in a unit file ("" if unset).
func unitValue(unit, key string) string {
	v := ""
	for _, l := range strings.Split(unit, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
			v = rest
		}
	}
	return v
}

// TestAgentUnitKeepsRetrying: systemd must never give up restarting the
// agent (issue 11 item 5): a Pi whose disk was full, or whose network came
// late, must come back by itself once the cause is gone, however long that
// took. Config errors (exit 2) stop it at once instead, since restarting
// cannot fix them.
func TestAgentUnitKeepsRetrying(t *testing.T) {
	b, err := os.ReadFile("edge-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	if unitValue(unit, "Restart") != "always" || unitValue(unit, "RestartPreventExitStatus") != "2" {
		t.Fatalf("Restart=%q RestartPreventExitStatus=%q", unitValue(unit, "Restart"), unitValue(unit, "RestartPreventExitStatus"))
	}
	sec := func(key, def string) float64 {
		v := unitValue(unit, key)
		if v == "" {
			v = def
		}
		v = strings.TrimSuffix(v, "s")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("%s=%q is not in seconds", key, v)
		}
		return f
	}
	interval := sec("StartLimitIntervalSec", "10") // systemd's defaults
	burst := sec("StartLimitBurst", "5")
	restart := sec("RestartSec", "0.1")
	if interval == 0 {
		return // no start rate limit at all
	}
	// Starting every RestartSec, the unit starts interval/restart+1 times
	// within one interval; more than the burst and systemd stops it.
	if starts := interval/restart + 1; starts > burst {
		t.Fatalf("a crash loop starts %v times in StartLimitIntervalSec=%v (RestartSec=%v) > StartLimitBurst=%v: systemd gives up for good",
			starts, interval, restart, burst)
	}
}
