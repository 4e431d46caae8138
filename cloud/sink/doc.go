// Package sink is `cloud-forwarder sink`: it consumes the readings topic
// in a Kafka consumer group (franz-go's kgo) and writes each reading as one
// row of the PostgreSQL table readings (pgx), exactly once.
//
// A batch of records is decoded (reading.Decode; records that are not
// readings, or that the table cannot hold, are counted, logged with their
// topic, partition and offset, and skipped), copied into a session-local
// temporary table and moved into readings with INSERT … ON CONFLICT
// (device_id, seq) DO NOTHING, in one transaction. Only after that
// transaction committed are the batch's Kafka offsets committed, so a crash
// at any point makes the group consume the batch again and its rows vanish
// as duplicates. A batch PostgreSQL refuses for its data is split in halves
// down to the refused row. While PostgreSQL is down the batch in hand is
// retried with backoff, nothing more is consumed and /readyz fails.
//
// The schema is created and migrated at start by package schema. Retention
// (SINK_RETENTION) deletes old rows in small batches on a connection of its
// own. /metrics, /healthz and /readyz are served by package statushttp.
//
// It does not read the dead-letter topic, create Kafka topics, or give
// PostgreSQL roles their permissions.
package sink
