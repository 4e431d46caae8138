package brokerauth_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
)

func TestRunWritesBothSetups(t *testing.T) {
	dir := t.TempDir()
	mosq, hive := filepath.Join(dir, "dynsec.json"), filepath.Join(dir, "credentials.xml")
	var stdout, stderr bytes.Buffer
	if err := brokerauth.Run([]string{"--logins", "testdata/logins", "--mosquitto", mosq, "--hivemq", hive}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	for _, p := range []string{mosq, hive} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600 (it holds password hashes)", p, st.Mode().Perm())
		}
		b, _ := os.ReadFile(p)
		for _, name := range []string{"pi-greenhouse-1", "fwd-a", "fleet-operator", "grafana"} {
			if !strings.Contains(string(b), name) {
				t.Errorf("%s lacks %s", p, name)
			}
			if strings.Contains(string(b), name+"-secret") {
				t.Errorf("%s holds %s's password", p, name)
			}
		}
	}
	var f struct {
		Clients []struct{ Username, ClientID string }
	}
	b, _ := os.ReadFile(mosq)
	if err := json.Unmarshal(b, &f); err != nil || len(f.Clients) != 4 {
		t.Fatalf("dynsec file: %v, %d clients", err, len(f.Clients))
	}
}

func TestRunTable(t *testing.T) {
	var stdout bytes.Buffer
	if err := brokerauth.Run([]string{"--table", "--prefix", "farm"}, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != brokerauth.Markdown("farm") || !strings.Contains(stdout.String(), "`farm/<login>/ack`") {
		t.Errorf("table:\n%s", stdout.String())
	}
}

func TestRunUsageErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("pw", "secret\n")
	out := filepath.Join(dir, "out.json")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no output", []string{"--logins", "testdata/logins"}},
		{"no logins", []string{"--mosquitto", out}},
		{"short line", []string{"--logins", write("short", "device pi-1\n"), "--mosquitto", out}},
		{"bad role", []string{"--logins", write("role", "admin pi-1 pw\n"), "--mosquitto", out}},
		{"bad name", []string{"--logins", write("name", "device pi/1 pw\n"), "--mosquitto", out}},
		{"empty", []string{"--logins", write("empty", "# nobody\n"), "--mosquitto", out}},
		{"wildcard prefix", []string{"--table", "--prefix", "s/+"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := brokerauth.Run(tc.args, &bytes.Buffer{}, &bytes.Buffer{})
			if !errors.Is(err, cmdline.ErrUsage) {
				t.Errorf("err = %v, want a usage error (exit 2)", err)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("%s written despite the error", out)
			}
		})
	}
}
