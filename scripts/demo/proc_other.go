//go:build !linux

package main

import "syscall"

// childAttr puts a child in its own process group (see proc_linux.go; no
// parent-death signal outside Linux).
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
