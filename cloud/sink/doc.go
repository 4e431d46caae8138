// Package sink is `cloud-forwarder sink`: it consumes the readings topic
// in a Kafka consumer group (franz-go's kgo) and writes each reading as one
// row of the PostgreSQL table readings (pgx), exactly once.
//
// Records are shared out by partition to SINK_WRITERS lanes, each a
// goroutine with its own PostgreSQL session, so several partitions are
// written at once; a partition always goes to the same lane, which stores
// its batches in order. A lane decodes a batch (reading.Decode; records
// that are not readings, or that the table cannot hold, are counted,
// logged with their topic, partition and offset, and skipped) and copies
// it straight into readings; if PostgreSQL refuses that (a row already
// there, after a redelivery), it copies the batch into a session-local
// temporary table and moves it with INSERT … ON CONFLICT (device_id, seq)
// DO NOTHING. Only after the batch's transaction committed are its Kafka
// offsets committed, so a crash at any point makes the group consume the
// batch again and its rows vanish as duplicates. A batch PostgreSQL
// refuses for its data is split in halves down to the refused row. While
// PostgreSQL is down each lane retries its batch with backoff, nothing
// more is consumed for it and /readyz fails.
//
// The schema is created and migrated at start by package schema. Retention
// (SINK_RETENTION) deletes old rows in small batches on a connection of its
// own. /metrics, /healthz and /readyz are served by package statushttp.
//
// It does not read the dead-letter topic, create Kafka topics, or give
// PostgreSQL roles their permissions.
package sink
