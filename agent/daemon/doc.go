// Package daemon is `edge-agent run`: it wires the config, the buffer,
// the sensor pollers, the MQTT publisher, the clock watcher and the status
// endpoint together and runs them until the context ends.
//
// Start-up order: validate the config (exit 2 naming the key), open the
// buffer, bind the status endpoint, then start the pollers, the publisher
// and the clock watcher under one errgroup, and tell systemd READY=1. The
// main loop pets the systemd watchdog at half of WatchdogSec while the
// buffer answers, every poll loop ticks and the publisher is not stalled
// (a deadlock anywhere stops the pets; an outage does not). SIGHUP re-reads the
// config file and restarts only the pollers with the new sensors list
// (other keys need a restart and are reported as such), bracketed by
// RELOADING=1 and READY=1 so the unit may use Type=notify-reload. On SIGTERM/SIGINT: STOPPING=1, pollers stop, the
// publisher waits up to 1.5s for outstanding PUBACKs, publishes "offline"
// and disconnects, then the buffer is closed; all within 5s.
//
//	app.Commands["run"] = daemon.Command(version)
package daemon
