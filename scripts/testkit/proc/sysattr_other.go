//go:build !linux

package proc

import "syscall"

// sysProcAttr puts a child in its own process group (see sysattr_linux.go;
// other systems have no parent-death signal).
func sysProcAttr(syscall.Signal) *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
