// Package mqtttest holds the agent's test fixtures around a real MQTT
// broker: an embedded mochi-mqtt server on 127.0.0.1 (plain and TLS, with an
// optional user ledger) that can be stopped and restarted on the same
// ports, a test CA, a paho subscriber that counts every reading by
// (device_id, seq), and a TCP proxy that can black-hole a link.
//
// It is only imported by tests.
package mqtttest
