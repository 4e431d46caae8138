// Command unhealthy is an edge-agent release that starts, tells systemd it
// is ready and pets the watchdog, but never connects or reads a sensor,
// for the over-the-air test in scripts/test-systemd.sh: the guard must
// roll it back at the deadline.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Fprintln(os.Stderr, "unhealthy: ready, petting the watchdog, never connecting")
	_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "unhealthy: stopped")
			return
		case <-t.C:
			_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyWatchdog)
		}
	}
}
