// Package mqttconn is the MQTT link both programs open to the broker: which
// URL schemes mean TLS (TLS, the one place that decides it), when plaintext
// is acceptable (IsLoopback), and the connection paho is given.
//
// It lives beside the wire formats because the agent and the forwarder
// share it; TLS settings come from buffer/tlsconf.
package mqttconn
