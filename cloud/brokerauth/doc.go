// Package brokerauth is the MQTT broker's permission table, written once,
// and the broker set-ups generated from it: mosquitto's dynamic-security
// plugin file (DynSec) and HiveMQ's File RBAC extension credentials
// (HiveMQ). The table says, per login, which client id it must connect
// with, what it may publish and what it may subscribe to and receive;
// README.md and docs/FORWARDER.md show Markdown's rendering of it, and the
// e2e harness runs mosquitto with DynSec's output.
//
// It does not start a broker, talk to one, or keep passwords: the caller
// reads them (from files, never the command line) and the generated files
// hold only salted hashes.
//
//	logins := []brokerauth.Login{
//		{Name: "pi-greenhouse-1", Role: brokerauth.Device, Password: pw1},
//		{Name: "fwd-a", Role: brokerauth.Forwarder, Password: pw2},
//	}
//	js, err := brokerauth.DynSec("sensors", logins, rand.Reader)
package brokerauth
