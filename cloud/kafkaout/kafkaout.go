package kafkaout

import (
	"crypto/tls"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgepipe/sensorpipe/buffer/tlsconf"
	"github.com/edgepipe/sensorpipe/cloud/config"
)

// TLSConfig returns the client TLS settings for the given security protocol,
// or nil for PLAINTEXT. A CA file replaces the system roots, the way
// librdkafka's ssl.ca.location does.
func TLSConfig(k config.Kafka) (*tls.Config, error) {
	if k.SecurityProtocol == config.Plaintext {
		return nil, nil
	}
	return tlsconf.Client(k.CAFile)
}

// ClientOpts are the franz-go options every command's client starts from:
// the bootstrap brokers, the client id, and the TLS and SASL PLAIN chosen by
// KAFKA_SECURITY_PROTOCOL, KAFKA_CA_FILE and the API key and secret.
func ClientOpts(k config.Kafka, clientID string) ([]kgo.Opt, error) {
	tc, err := TLSConfig(k)
	if err != nil {
		return nil, err
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(k.Bootstrap...),
		kgo.ClientID(clientID),
		kgo.DialTimeout(10 * time.Second),
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if k.SecurityProtocol == config.SASLSSL {
		opts = append(opts, kgo.SASL(plain.Auth{User: k.APIKey, Pass: k.APISecret.Reveal()}.AsMechanism()))
	}
	return opts, nil
}

// HeaderRetained is the header of a heartbeat record on the status topic
// (KAFKA_STATUS_TOPIC) that says whether the broker delivered it to the
// forwarder as its retained copy, at subscribe ("true"), rather than live
// ("false"). A retained copy says nothing about when the device last
// spoke: the forwarder writes the header, the sink reads it.
const HeaderRetained = "mqtt_retained"
