// Package bufhttp is the buffer's debug endpoint: the HTTP handler the
// agent mounts at /buffer/ on its status address (stats, list, export) and
// the client `edge-agent buffer` uses to ask a running agent, which holds
// the bbolt file. While the agent runs, stats carry the publisher's view
// (Delivery): how the buffered readings split between waiting and sent
// but unconfirmed.
//
// It does not parse command lines (agent/bufcmd does) nor serve the other
// endpoints (agent/status does).
package bufhttp
