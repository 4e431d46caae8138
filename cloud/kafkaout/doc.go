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
// trip: 5,000 to 8,000 records/s with Kafka 20 ms away. Producer also keeps
// one request per partition in flight, but sends everything that queued up
// meanwhile the moment the answer is back: batches grow with the round trip
// by themselves (tens of thousands of records/s at 20 to 50 ms, see
// docs/PERFORMANCE.md), stay small close by, and no record waits for a
// timer. A failed request is retried before anything queued behind it, so
// a partition's order survives outages. RequiredAcks is all; the partitioner
// is the Java client's murmur2 on the key.
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
