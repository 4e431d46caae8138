// Package sink is `cloud-forwarder sink`: it consumes the readings topic
// in a Kafka consumer group and writes each reading as one row of the
// PostgreSQL table readings, exactly once.
package sink
