package tlsconf

import (
	"os"
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
