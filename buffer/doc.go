// Package buffer is the agent's durable store-and-forward queue: a FIFO of
// encoded readings in a bbolt file that survives network loss, broker
// outages, kill -9 and power loss.
//
// Append assigns each reading its seq (durable, monotonic, never reused,
// not even after a purge, a restart or a damaged file; kept as bbolt's
// bucket sequence), stores the wire bytes and returns only once they are on
// disk. Appends and deletes from many goroutines share one write (group
// commit) to a preallocated write-ahead log, <path>.wal, opened with
// O_DSYNC: one commit costs about one bare write+fsync, where a bbolt commit
// costs two fdatasyncs plus the tree's pages. The log is checkpointed into
// bbolt every 2 MiB or after a second of quiet, and replayed by Open after
// a crash. The publisher Peeks the oldest records, publishes them and
// Deletes them by seq when the broker acknowledges (in any order).
//
// The buffer is bounded by MaxBytes (live bytes) and MaxAge; past either the
// oldest readings are dropped, counted in Stats and logged, never silently.
// A file that bbolt cannot open or that fails the open-time check is moved
// aside as <path>.corrupt-<UTC time> and a fresh buffer starts, keeping the
// seq above the old file's when it can be salvaged.
//
// It does not publish, retry or know about MQTT; see agent/mqttpub for that.
// The package Example (example_test.go) shows Open, Append, Peek, Delete
// and Stats on a real file.
package buffer
