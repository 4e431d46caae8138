// Package kafkaout builds the Kafka clients the forwarder uses from the
// validated configuration: a kafka-go Transport and a Dialer (for the
// Reader in `cloud-forwarder tail`) with TLS, SASL PLAIN and the CA bundle
// chosen by KAFKA_SECURITY_PROTOCOL and KAFKA_CA_FILE, and the Producer that
// writes the forwarder's records.
//
// Producer is built on kafka-go's Client.Produce instead of kafka-go's
// Writer. The Writer sends one batch per partition at a time and closes a
// batch on a timer (or when full) while the previous one still waits for
// Kafka, so at a distance it sends many small batches, each paying a round
// trip: 5,000 to 8,000 records/s with Kafka 20 ms away; and kafka-go's
// Transport runs one request per connection at a time, spreading
// concurrent ones over several connections, where Kafka may take two
// requests of one partition in either order. Producer keeps up to
// KAFKA_MAX_REQUESTS requests per partition pipelined on one connection to
// the leader (Kafka takes a connection's requests in order), sends a batch
// at once when nothing is in flight and otherwise when it is full or has
// waited KAFKA_BATCH_TIMEOUT: close by batches stay small and nothing waits
// for a timer, at a distance a record waits one round trip plus the linger
// rather than up to two round trips (see docs/PERFORMANCE.md). A failed
// request is resent in order before anything new; RequiredAcks is all; the
// partitioner is the Java client's murmur2 on the key. The connection code
// (brokerConn) uses kafka-go's protocol package for every message it
// encodes and decodes, and the Transport's dialer settings, TLS and SASL
// mechanism.
//
// TLS roots come from package tlsconf (system roots with an embedded fallback).
//
// It does not track MQTT messages: package forwarder does.
//
// Example:
//
//	p, err := kafkaout.NewWriter(cfg.Kafka, "cloud-forwarder-a", completion, retrying)
//	err = p.WriteMessages(ctx, msgs...) // returns at once; completion reports each batch
package kafkaout
