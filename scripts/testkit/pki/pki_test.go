package pki_test

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"testing"

	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// TestHandshake: a client trusting only the CA accepts the server under
// every loopback name, and the key file is private.
func TestHandshake(t *testing.T) {
	p := pki.New(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.Server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, name := range []string{"127.0.0.1", "localhost"} {
		cfg := p.Client()
		cfg.ServerName = name
		c, err := tls.Dial("tcp", "127.0.0.1:"+port, cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c.Close()
	}
	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("a client with the system roots accepted the test certificate")
	}
	fi, err := os.Stat(p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %s has mode %v, want 0600", p.KeyFile, fi.Mode())
	}
}
