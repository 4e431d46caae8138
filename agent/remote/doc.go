// Package remote applies the fleet's desired config to the agent and runs
// the operator's commands (docs/DESIGN.md, "Remote config and commands").
//
// Config documents arrive retained at three levels (fleet, the device's
// group, the device) and are layered key by key, later levels winning.
// Each document is versioned and signed with the operator's fleet key
// (Ed25519 under ConfigPurpose); only the keys in Allowed may be set. A
// Manager verifies, layers and validates a document with the checks of
// `edge-agent config check`, persists it under the state directory,
// applies it through an Applier (in place where it can, else by a clean
// restart), and returns to the last config that worked when no reading is
// stored within fleet.grace. Its Report is what the heartbeat carries.
//
// A Commander runs signed, expiring commands (restart, resend, sensors,
// buffer-stats), refuses replayed ids (kept on disk until they expire),
// and answers each with a Result carrying the command's id.
//
// It does not talk MQTT itself: the agent's publisher delivers the
// messages (Offer) and sends results; the operator tool (cloud-forwarder
// fleet) uses SignConfig and SignCommand.
//
//	m, start, err := remote.New(remote.Options{Local: cfg, Verifier: keys, StateDir: dir})
//	// run the agent with start; publisher handlers call m.Offer(level, payload)
//	err = m.Run(ctx, applier) // errors.Is(err, remote.ErrRestart): exit, systemd restarts
package remote
