// Package testkit is the repository's one kit for tests, benchmarks, the
// e2e harness and the demo: everything that starts real parts on
// 127.0.0.1 and watches them. It is not internal, so scripts/ programs use
// it as well as tests, and nothing in production imports it.
//
// This package holds the light helpers every test may use without pulling
// in a broker or Kafka: LogBuffer (a log sink safe for concurrent writers),
// Build and Main (build a real binary once per test process, as make build
// does), WaitFor, NeedTool (skip without a tool, fail under CI=true),
// FreeAddr/PickAddr, Metric and Metrics (Prometheus samples), BenchRTTs,
// BufferedSeqs (what a stopped agent's buffer still holds, for loss
// checks) and NotReportingSQL (the Fleet dashboard's query).
//
// The parts live in sub-packages, so a test imports only what it starts:
//
//   - pki: a throwaway CA and a server certificate for 127.0.0.1/localhost;
//   - broker: the embedded mochi-mqtt broker (TLS, users, restartable on
//     the same ports) and the mosquitto runner;
//   - kafka: franz-go's kfake with TLS and SASL PLAIN, optionally behind a
//     fault proxy;
//   - tcpproxy: the fault TCP relay (pass, black hole, refuse, delay);
//   - proc: a child process runner with restarts, logs and peak RSS;
//   - pgcluster: a throwaway PostgreSQL cluster from Debian's binaries;
//   - stack: the forwarder's and the sink's standard set-up on top of
//     pki, broker and kafka (credentials, Env, sample readings).
package testkit
