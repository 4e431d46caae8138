package proc

import "syscall"

// sysProcAttr puts a child in its own process group, so a Ctrl-C reaches
// only the parent (which stops its children in order), and has the kernel
// send it sig (SIGKILL when 0) if the parent dies without stopping it.
func sysProcAttr(sig syscall.Signal) *syscall.SysProcAttr {
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: sig}
}
