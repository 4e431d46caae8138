package clock

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// maxErrorLimit is the kernel's NTP_PHASE_LIMIT-derived ceiling for
// maxerror (16 s in µs): a clock whose error estimate reached it is not synced.
const maxErrorLimit = 16_000_000

// Kernel asks the Linux kernel through adjtimex(2) (read only: Modes = 0).
type Kernel struct{}

// Synced reports whether the kernel's NTP state says the clock is set:
// STA_UNSYNC clear, state not TIME_ERROR, and maxerror below 16 s.
func (Kernel) Synced() (bool, error) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return false, fmt.Errorf("adjtimex: %w", err)
	}
	return SyncedFrom(state, tx.Status, int64(tx.Maxerror)), nil
}

// SyncedFrom interprets adjtimex's result; split out so it can be tested
// with the values a Pi reports before and after timesyncd sets the clock.
func SyncedFrom(state int, status int32, maxerror int64) bool {
	return state != unix.TIME_ERROR && status&unix.STA_UNSYNC == 0 && maxerror < maxErrorLimit
}
