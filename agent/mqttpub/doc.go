// Package mqttpub drains the agent's buffer to an MQTT broker (HiveMQ Cloud
// in production) with QoS 1 and deletes each reading only after its PUBACK.
//
// It keeps a window of in-flight publishes (2,000 by default), peeking past
// the ones already sent, so a backlog drains at tens of thousands of
// readings a second. Acknowledged sequence numbers are deleted in batches.
// A failed delete ends the session: the readings are sent again and
// deleted on their next acknowledgement. Stalled reports a publisher that
// has work and makes no progress (a deadlock), for readiness and the
// systemd watchdog.
//
// When the connection drops, everything not yet acknowledged is still in
// the buffer, so the next connection simply starts again from the oldest
// record: order per sensor is kept and nothing is lost; a few readings may
// be delivered twice (consumers drop duplicates by device_id and seq).
//
// Each connection uses a fresh paho client with an in-memory store and
// CleanSession(false): the buffer, not paho's store, is the source of truth
// for what to re-send, so a process crash loses nothing either. The package
// reconnects itself with capped exponential backoff and jitter, and drops
// a connection that stops acknowledging (a black-holed network) instead of
// waiting for TCP to notice.
//
// It does not read sensors or own the buffer; the caller passes a Queue.
// The package Example (example_test.go) wires it to a buffer.
package mqttpub
