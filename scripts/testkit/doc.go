// Package testkit is the repository's one kit for tests, benchmarks, the
// e2e harness and the demo: everything that starts real parts on
// 127.0.0.1 and watches them. It is not internal, so scripts/ programs use
// it as well as tests, and nothing in production imports it.
//
// This package holds the light helpers every test may use without pulling
// in a broker or Kafka: LogBuffer (a log sink safe for concurrent writers),
// Build and Main (build a real binary once per test process, as make build
// does), WaitFor, NeedTool (skip without a tool, fail under CI=true),
// FreeAddr and Metric (one Prometheus sample).
//
// The parts live in sub-packages, so a test imports only what it starts:
//
//   - pki: a throwaway CA and a server certificate for 127.0.0.1/localhost;
//   - broker: the embedded mochi-mqtt broker (TLS, users, restartable on
//     the same ports) and the mosquitto runner;
//   - kafka: franz-go's kfake with TLS and SASL PLAIN, optionally behind a
//     fault proxy;
//   - proxy: the fault TCP proxy (pass, black hole, refuse);
//   - proc: a child process runner with restarts, logs and peak RSS.
package testkit
