// Package reading defines one sensor reading and its JSON wire format, the
// contract between the edge agent, the MQTT broker, the cloud forwarder and
// every Kafka consumer (see docs/DESIGN.md, "The wire format").
//
// The same bytes travel as the MQTT payload and the Kafka record value:
//
//	{"v":1,"device_id":"pi-greenhouse-1","seq":48213,"sensor":"bme280-0x76","kind":"bme280",
//	 "ts":"2026-11-25T10:15:02.125Z","time_synced":true,
//	 "values":{"temperature_c":21.43,"humidity_pct":48.2,"pressure_hpa":1008.61}}
//
// Encode writes that form; Decode parses it strictly and rejects what a
// consumer cannot trust: a missing device_id, seq or ts; a device_id or
// sensor that cannot be a topic level; an empty kind or value key, or one
// with control characters; duplicate keys (the raw bytes travel on, and
// consumers disagree on which copy wins) and top-level keys that differ
// from a known one only in case; a seq of 0 or above 2^53 (MaxSeq); a ts
// before 2000 or after 9999; numbers that are not finite; invalid UTF-8;
// payloads over MaxPayload bytes. Parse is Decode without the ts bounds,
// for the agent's buffer, which keeps readings stamped at 1970 by a clock
// not yet synced. It does not know about MQTT topics or Kafka; CheckName
// validates the names that become topic levels. The package Example (example_test.go) encodes and decodes
// one reading.
package reading
