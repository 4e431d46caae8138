// Package tlsconf builds the client TLS settings of every TLS connection
// both programs open (the agent's MQTT link, the forwarder's MQTT and Kafka
// links, the sink's Kafka link): TLS 1.2 or newer, verifying against a CA
// bundle file when one is configured, else the system roots. Where the
// system has none (a FROM scratch image, a Pi image without
// ca-certificates: no /etc/ssl) it trusts the public roots embedded from
// golang.org/x/crypto/x509roots/fallback/bundle, the CAs HiveMQ Cloud and
// Confluent Cloud use. It parses them only then: the fallback package
// itself would parse all ~150 at every start (~0.4 MB of heap for the
// process's life, in the agent and the forwarder alike).
//
// Example:
//
//	cfg, err := tlsconf.Client("")          // system roots (or the embedded fallback)
//	cfg, err := tlsconf.Client("/ca.pem")   // only this CA bundle
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// ErrNoCertificate is wrapped when a CA file holds no PEM certificate.
var ErrNoCertificate = errors.New("no PEM certificates")

// Client returns a TLS client config trusting caFile only, or the system
// roots when caFile is empty (the embedded ones where the system has none).
// A CA file replaces the system roots, the way librdkafka's
// ssl.ca.location and mosquitto's --cafile do.
func Client(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		pool, err := systemOrEmbedded(x509.SystemCertPool())
		if err != nil {
			return nil, fmt.Errorf("embedded roots: %w", err)
		}
		cfg.RootCAs = pool
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: %w", caFile, ErrNoCertificate)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// systemOrEmbedded is the system pool (x509.SystemCertPool's answer), or
// the embedded roots when the system has none.
func systemOrEmbedded(sys *x509.CertPool, err error) (*x509.CertPool, error) {
	if err == nil && !sys.Equal(x509.NewCertPool()) {
		return sys, nil
	}
	return embeddedRoots()
}

// embeddedRoots parses the public roots of x509roots/fallback/bundle, with
// their constraints, as the fallback package would.
func embeddedRoots() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for r := range bundle.Roots() {
		cert, err := x509.ParseCertificate(r.Certificate)
		if err != nil {
			return nil, err
		}
		if r.Constraint == nil {
			pool.AddCert(cert)
		} else {
			pool.AddCertWithConstraint(cert, r.Constraint)
		}
	}
	return pool, nil
}
