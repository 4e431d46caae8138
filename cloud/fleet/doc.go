// Package fleet is `cloud-forwarder fleet`, the operator's tool for the
// fleet's remote config and commands (docs/FLEET.md):
//
//	cloud-forwarder fleet config push --fleet|--group NAME|--device ID FILE
//	cloud-forwarder fleet config show DEVICE [--group NAME]
//	cloud-forwarder fleet status
//	cloud-forwarder fleet cmd DEVICE NAME
//	cloud-forwarder fleet keygen [--release] PRIVATE_FILE PUBLIC_FILE
//	cloud-forwarder fleet release --version X.Y.Z --url URL DIR
//	cloud-forwarder fleet release verify --keys FILE DIR
//
// It connects to the broker with the operator's login (FLEET_* variables),
// signs documents and commands with the operator's fleet key
// (FLEET_KEY_FILE, Ed25519 PEM) through agent/remote's formats, signs
// release manifests with the release key (RELEASE_KEY_FILE) through
// agent/update/release's, and never prints a key or a password. status reads the devices' retained
// heartbeats from the broker (with the monitoring login); it does not read
// the database, where the history and the Grafana "Fleet" dashboard are.
package fleet
