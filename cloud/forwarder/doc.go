// Package forwarder moves sensor readings from an MQTT broker (HiveMQ) to
// Kafka (Confluent) at least once.
//
// It subscribes with QoS 1 on a persistent session (clean session false,
// fixed client id) with paho's automatic acks disabled. Each message is
// validated with reading.Decode and written to Kafka through an async
// kafka-go Writer; the MQTT PUBACK is sent only after Kafka acknowledged the
// record (acks=all), and PUBACKs go out in the order the PUBLISHes arrived,
// as MQTT 3.1.1 section 4.6 requires. Payloads that fail validation go to the
// dead-letter topic with an error header and are acked like the rest.
//
// Once Kafka acknowledged a reading (main topic or DLQ), its seq is
// confirmed to the device that published it, on {prefix}/{device_id}/ack
// (package buffer/confirm's format), coalesced into ranges and at most once
// per device per Config.ConfirmInterval, so the device may delete it.
//
// The number of messages received and not yet acked is bounded
// (Config.MaxInFlight): when Kafka is down the message handler blocks, the
// broker keeps the backlog in our persistent session, /readyz fails, and
// the records already taken are retried with backoff until Kafka is back.
//
// Cancelling Run's context, the one stop signal, stops taking messages,
// flushes what is in flight, acks it, confirms it, disconnects, and returns
// (within Config.ShutdownTimeout and a few seconds) once every goroutine the
// forwarder started has ended.
//
// Example:
//
//	f, err := forwarder.New(cfg, forwarder.Options{Logger: log})
//	err = f.Run(ctx) // until ctx is cancelled
package forwarder
