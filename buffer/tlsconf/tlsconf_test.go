package tlsconf

import (
	"crypto/x509"
	"errors"
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

// TestSystemOrEmbedded: the system's pool when it has roots; the embedded
// public roots when it has none (a FROM scratch image: SystemCertPool
// answers an empty pool) or cannot load them.
func TestSystemOrEmbedded(t *testing.T) {
	embedded, err := embeddedRoots()
	if err != nil {
		t.Fatal(err)
	}
	if embedded.Equal(x509.NewCertPool()) {
		t.Fatal("no embedded roots")
	}
	sys := x509.NewCertPool()
	sys.AddCert(&x509.Certificate{Raw: []byte("a root"), RawSubject: []byte("root")})
	tests := []struct {
		name string
		sys  *x509.CertPool
		err  error
		want *x509.CertPool
	}{
		{"system roots", sys, nil, sys},
		{"empty system pool", x509.NewCertPool(), nil, embedded},
		{"no system pool", nil, errors.New("no roots"), embedded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := systemOrEmbedded(tt.sys, tt.err)
			if err != nil || !got.Equal(tt.want) {
				t.Fatalf("systemOrEmbedded = %v (equal to the expected pool: %v)", err, got.Equal(tt.want))
			}
		})
	}
}
