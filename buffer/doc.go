// Package buffer is the agent's durable store-and-forward queue: a FIFO of
// encoded readings in a bbolt file that survives network loss, broker
// outages, kill -9 and power loss.
//
// Append assigns each reading its seq (bbolt's bucket sequence: durable,
// monotonic, never reused, not even after a purge or a restart), stores the
// wire bytes and returns only after fsync. Appends and deletes from many
// goroutines are collected by one writer goroutine into a single bbolt
// transaction (group commit), so an SD card is written once per batch, not
// once per reading. The publisher Peeks the oldest records, publishes them
// and Deletes them by seq when the broker acknowledges (in any order).
//
// The buffer is bounded by MaxBytes (live bytes) and MaxAge; past either the
// oldest readings are dropped, counted in Stats and logged, never silently.
// A file that bbolt cannot open or that fails the open-time check is moved
// aside as <path>.corrupt-<UTC time> and a fresh buffer starts, keeping the
// seq above the old file's when it can be salvaged.
//
// It does not publish, retry or know about MQTT; see agent/ for that.
//
// Example:
//
//	b, err := buffer.Open("/var/lib/edge-agent/buffer.db", buffer.Options{Logger: log})
//	if err != nil { return err }
//	defer b.Close()
//	if err := b.Append(ctx, &r); err != nil { return err } // r.Seq is set and on disk
//	recs, _ := b.Peek(0, 100)
//	// publish recs[i].Payload, then on PUBACK:
//	_ = b.Delete(ctx, recs[0].Seq)
package buffer
