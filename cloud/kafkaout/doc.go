// Package kafkaout builds the kafka-go clients the forwarder uses from the
// validated configuration: a Transport (for the Writer) and a Dialer (for
// the Reader in `cloud-forwarder tail`) with TLS, SASL PLAIN and the CA
// bundle chosen by KAFKA_SECURITY_PROTOCOL and KAFKA_CA_FILE, and a Writer
// set up for at-least-once delivery: RequiredAcks=all, the Java-compatible
// murmur2 partitioner on key = device_id, async batching with a Completion
// callback so the caller learns when each record is acknowledged.
//
// TLS roots come from package tlsconf (system roots with an embedded fallback).
//
// It does not retry or track records: package forwarder does.
//
// Example:
//
//	w, err := kafkaout.NewWriter(cfg.Kafka, cfg.ID, func(msgs []kafka.Message, err error) { ... })
//	err = w.WriteMessages(ctx, msgs...) // returns at once; Completion reports the outcome
package kafkaout
