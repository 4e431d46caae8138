//go:build !linux

package clock

import (
	"errors"
	"time"
)

// Kernel assumes the clock is synced where adjtimex does not exist.
type Kernel struct {
	Flag string // unused outside Linux
}

// Synced always reports true outside Linux.
func (Kernel) Synced() (bool, error) { return true, nil }

// BootID is Linux only; elsewhere readings are not boot-stamped.
func BootID() ([16]byte, error) { return [16]byte{}, errors.New("boot id: Linux only") }

// SinceBoot is the time since the process started outside Linux.
func SinceBoot() time.Duration { return time.Since(processStart) }
