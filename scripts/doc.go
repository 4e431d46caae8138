// Package scripts holds the shell scripts that put edge-agent on a Pi
// (install-pi.sh over ssh, flash-sd.sh onto a mounted SD card, test-qemu.sh
// for the cross-built binaries) and the Go tests that run them against
// stand-ins for the remote Pi and a fake root filesystem. Its
// subdirectories are the Go tools (mkdeb, demo, e2e) and testkit, the one
// test kit every test, benchmark, the e2e run and the demo use.
package scripts
