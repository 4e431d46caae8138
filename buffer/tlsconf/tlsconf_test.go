package tlsconf

import (
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestClient(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, wantErr string
	}{
		{"system roots", "", ""},
		{"missing file", filepath.Join(dir, "nope.pem"), "read CA file"},
		{"no PEM", junk, "no PEM certificates"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Client(tt.file)
			if tt.wantErr == "" {
				if err != nil || cfg.RootCAs == nil || cfg.MinVersion == 0 {
					t.Fatalf("Client(%q) = %+v, %v", tt.file, cfg, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Client(%q) error %v, want %q", tt.file, err, tt.wantErr)
			}
		})
	}
}

// TestClientEmbeddedRoots: on a system without roots (SSL_CERT_FILE and
// SSL_CERT_DIR name nothing, as in a FROM scratch image) Client("") trusts
// the embedded public roots. It runs in a child process: the system pool
// is loaded once per process.
func TestClientEmbeddedRoots(t *testing.T) {
	if os.Getenv("TLSCONF_CHILD") == "1" {
		sys, err := x509.SystemCertPool()
		if err == nil && !sys.Equal(x509.NewCertPool()) {
			t.Fatal("the child still sees system roots")
		}
		cfg, err := Client("")
		if err != nil {
			t.Fatal(err)
		}
		want, err := embeddedRoots()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.RootCAs.Equal(x509.NewCertPool()) || !cfg.RootCAs.Equal(want) {
			t.Fatal("Client(\"\") does not trust the embedded roots")
		}
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	none := filepath.Join(t.TempDir(), "none")
	cmd := exec.Command(exe, "-test.run", "^TestClientEmbeddedRoots$", "-test.v")
	cmd.Env = append(os.Environ(), "TLSCONF_CHILD=1", "SSL_CERT_FILE="+none, "SSL_CERT_DIR="+none)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestClientEmbeddedRoots") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
