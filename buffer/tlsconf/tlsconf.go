// Package tlsconf builds the client TLS settings of every TLS connection
// both programs open (the agent's MQTT link, the forwarder's MQTT and Kafka
// links, the sink's Kafka link): TLS 1.2 or newer, verifying against a CA
// bundle file when one is configured, else the system roots. It imports
// golang.org/x/crypto/x509roots/fallback so a binary in a FROM scratch image,
// or a Pi image without ca-certificates, which have no /etc/ssl, still
// trusts the public CAs HiveMQ Cloud and Confluent Cloud use.
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

	_ "golang.org/x/crypto/x509roots/fallback" // roots for FROM scratch images
)

// ErrNoCertificate is wrapped when a CA file holds no PEM certificate.
var ErrNoCertificate = errors.New("no PEM certificates")

// Client returns a TLS client config trusting caFile only, or the system
// roots when caFile is empty. A CA file replaces the system roots, the way
// librdkafka's ssl.ca.location and mosquitto's --cafile do.
func Client(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("system roots: %w", err)
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
