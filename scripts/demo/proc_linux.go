package main

import "syscall"

// childAttr puts a child in its own process group, so Ctrl-C reaches only
// the demo, which stops the agent first and lets the forwarder drain. The
// kernel sends the child SIGTERM if the demo dies without stopping it
// (killed, SIGPIPE), instead of leaving it running.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
