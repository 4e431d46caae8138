// Package bench holds the forwarder's throughput and latency benchmarks
// (no library code). They run the real cloud-forwarder binary, built once in
// TestMain, between a local mosquitto (started from a generated config) and
// an in-process kfake cluster, and report:
//
//   - BenchmarkDrainBacklog: a 100,000-message persistent-session backlog
//     drained into Kafka, acking MQTT only after Kafka: msgs/s, CPU µs per
//     message (getrusage of the child), peak RSS.
//   - BenchmarkLiveLatency: 1,000 msg/s published live; p50/p99 from MQTT
//     publish to the record being readable in Kafka.
//
// Run them one at a time on a quiet machine:
//
//	flock /tmp/bench.lock go test -run '^$' -bench . -benchtime 1x ./cloud/bench/
//
// They skip (or fail with CI=true) when mosquitto is not installed.
package bench
