// Package bench holds the forwarder's throughput and latency benchmarks
// (no library code). They run the real cloud-forwarder binary, built once in
// TestMain as `make build` ships it, between a local mosquitto with TLS
// (started from a generated config) and an in-process kfake cluster with
// TLS and SASL PLAIN behind a relaying proxy that puts Kafka at a distance
// (BENCH_RTTS, round trips in ms, default "0 20 50"; one sub-benchmark each):
//
//   - BenchmarkDrainBacklog: a 100,000-message persistent-session backlog
//     drained into Kafka, acking MQTT only after Kafka: msgs/s, CPU µs per
//     message (getrusage of the child), peak RSS (VmHWM).
//   - BenchmarkDrainMosquittoSub: mosquitto_sub draining the same backlog,
//     the local limit the forwarder is held against.
//   - BenchmarkLiveLatency: 1,000 msg/s published live; p50/p99 from MQTT
//     publish to the record being readable in Kafka, an upper bound of the
//     forwarder's own added p99, and that p99 from its own histogram.
//   - BenchmarkKillMidDrain: SIGKILL halfway through a 20,000 backlog and a
//     restart: the duplicates Kafka holds (bounded by the in-flight window).
//
// scripts/bench-distance.sh runs them in interleaved rounds with the
// agent's drain and prints the table docs/PERFORMANCE.md shows. One at a
// time on a quiet machine:
//
//	flock /tmp/bench.lock go test -run '^$' -bench . -benchtime 1x ./cloud/bench/
//
// BENCH_FORWARDER_BIN runs another build of the binary instead (an A/B
// comparison), BENCH_FORWARDER_ENV adds environment to it, and
// BENCH_MOSQUITTO_CONF config lines to the broker. They skip (or fail with
// CI=true) when mosquitto is not installed.
package bench
