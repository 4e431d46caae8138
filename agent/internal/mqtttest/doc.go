// Package mqtttest holds the agent tests' TCP proxy that can black-hole a
// link; the brokers, the test CA and the counting subscriber are in
// scripts/testkit.
//
// It is only imported by tests.
package mqtttest
