package clock

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxErrorLimit is the kernel's NTP_PHASE_LIMIT-derived ceiling for
// maxerror (16 s in µs): a clock whose error estimate reached it is not synced.
const maxErrorLimit = 16_000_000

// TimesyncdFlag is the file systemd-timesyncd creates once it has
// synchronised the clock. It is the fallback when adjtimex is forbidden
// (systemd's ProtectClock=yes denies even the read-only call).
const TimesyncdFlag = "/run/systemd/timesync/synchronized"

// Kernel asks the Linux kernel through adjtimex(2) (read only: Modes = 0).
type Kernel struct {
	// Flag overrides TimesyncdFlag (tests).
	Flag string
}

// Synced reports whether the kernel's NTP state says the clock is set:
// STA_UNSYNC clear, state not TIME_ERROR, and maxerror below 16 s. When
// seccomp forbids adjtimex (EPERM), the timesyncd flag file decides.
func (k Kernel) Synced() (bool, error) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if errors.Is(err, unix.EPERM) {
		flag := k.Flag
		if flag == "" {
			flag = TimesyncdFlag
		}
		if _, serr := os.Stat(flag); serr == nil {
			return true, nil
		}
		return false, fmt.Errorf("adjtimex: %w (is ProtectClock=yes set in the unit?) and no %s", err, flag)
	}
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

// BootIDPath is the kernel's random id of the running boot.
const BootIDPath = "/proc/sys/kernel/random/boot_id"

// BootID reads the kernel's boot id: a new random UUID at every boot.
func BootID() ([16]byte, error) {
	b, err := os.ReadFile(BootIDPath)
	if err != nil {
		return [16]byte{}, fmt.Errorf("boot id: %w", err)
	}
	return ParseBootID(string(b))
}

// SinceBoot is CLOCK_BOOTTIME: the time since boot, suspend included. No
// one sets it, so it stays right while the wall clock is wrong or stepped.
func SinceBoot() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Since(processStart) // cannot happen on Linux >= 2.6.39
	}
	return time.Duration(ts.Nano())
}
