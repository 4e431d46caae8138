package kafkaout

import (
	"crypto/tls"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/twmb/franz-go/pkg/kgo"
	kgoplain "github.com/twmb/franz-go/pkg/sasl/plain"

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

// Mechanism returns SASL PLAIN for SASL_SSL, else nil.
func Mechanism(k config.Kafka) sasl.Mechanism {
	if k.SecurityProtocol != config.SASLSSL {
		return nil
	}
	return plain.Mechanism{Username: k.APIKey, Password: k.APISecret.Reveal()}
}

// Transport returns a kafka-go transport with the configured TLS and SASL.
func Transport(k config.Kafka, clientID string) (*kafka.Transport, error) {
	tc, err := TLSConfig(k)
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{
		DialTimeout: 10 * time.Second,
		IdleTimeout: 60 * time.Second,
		// The producer finds leaders in this cache: after a leader moves,
		// its requests fail and are retried until the cache names the new
		// one, so the TTL bounds that stall (one small request per TTL).
		MetadataTTL: 5 * time.Second,
		ClientID:    clientID,
		TLS:         tc,
		SASL:        Mechanism(k),
	}, nil
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
		opts = append(opts, kgo.SASL(kgoplain.Auth{User: k.APIKey, Pass: k.APISecret.Reveal()}.AsMechanism()))
	}
	return opts, nil
}

// Compression maps the KAFKA_COMPRESSION names to kafka-go codecs.
func Compression(name string) kafka.Compression {
	switch name {
	case "gzip":
		return kafka.Gzip
	case "snappy":
		return kafka.Snappy
	case "lz4":
		return kafka.Lz4
	case "zstd":
		return kafka.Zstd
	}
	return 0
}

// NewWriter returns the forwarder's Producer: RequiredAcks=all, murmur2 on
// the key, batches capped by KAFKA_BATCH_SIZE and KAFKA_BATCH_BYTES,
// compressed with KAFKA_COMPRESSION, up to KAFKA_MAX_REQUESTS in flight per
// partition, lingering KAFKA_BATCH_TIMEOUT while others are in flight. completion reports each batch's
// outcome; retrying (may be nil) each failed attempt the Producer retries
// itself. Records must set Topic (the forwarder writes to the topic and its
// DLQ through one Producer).
func NewWriter(k config.Kafka, clientID string, completion func([]kafka.Message, error), retrying func(int, error)) (*Producer, error) {
	tr, err := Transport(k, clientID)
	if err != nil {
		return nil, err
	}
	return NewProducer(kafka.TCP(k.Bootstrap...), tr, ProducerOptions{
		MaxRecords:     k.BatchSize,
		MaxBytes:       int64(k.BatchBytes),
		Compression:    Compression(k.Compression),
		RequestTimeout: 10 * time.Second,
		InFlight:       k.MaxRequests,
		Linger:         k.BatchTimeout,
		Completion:     completion,
		Retrying:       retrying,
	}), nil
}
