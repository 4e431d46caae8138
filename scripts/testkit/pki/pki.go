// Package pki makes a throwaway certificate authority and one server
// certificate for 127.0.0.1, ::1 and localhost, written as PEM files, so
// brokers and Kafka in tests, the e2e harness and benchmarks serve TLS the
// way production does. Nothing secret is checked in: every run makes new
// keys.
//
//	p := pki.New(t)                      // in a test; or pki.Write(dir) in a program
//	srv := tls.NewListener(ln, p.Server) // the server side
//	cli := p.Client()                    // trusts only this CA; p.CAFile for a child's *_CA_FILE
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a CA and a server certificate signed by it, valid for a day.
type PKI struct {
	CAFile   string // PEM of the CA: HIVEMQ_CA_FILE, KAFKA_CA_FILE, mqtt.ca_file, mosquitto's cafile
	CertFile string // PEM of the server certificate
	KeyFile  string // PEM of the server key
	Pool     *x509.CertPool
	Server   *tls.Config // serves the certificate, TLS 1.2 minimum
}

// New writes a PKI into a temporary directory of tb.
func New(tb testing.TB) *PKI {
	tb.Helper()
	p, err := Write(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// Write creates the CA and the server certificate in dir (ca.pem,
// server.pem, server.key).
func Write(dir string) (*PKI, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sensorpipe test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create server certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	p := &PKI{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server.pem"),
		KeyFile:  filepath.Join(dir, "server.key"),
		Pool:     x509.NewCertPool(),
	}
	p.Pool.AddCert(ca)
	// The CA and certificate are public (0644: a container user other than
	// ours reads the CA); the key is not.
	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{
		{p.CAFile, "CERTIFICATE", caDER, 0o644},
		{p.CertFile, "CERTIFICATE", der, 0o644},
		{p.KeyFile, "EC PRIVATE KEY", keyDER, 0o600},
	} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			return nil, err
		}
	}
	p.Server = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	}
	return p, nil
}

// Client is a client TLS config trusting only this CA, TLS 1.2 minimum.
func (p *PKI) Client() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.Pool}
}
