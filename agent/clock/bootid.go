package clock

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// processStart stands in for the boot where the kernel has no boot clock.
var processStart = time.Now()

// ParseBootID parses the text of /proc/sys/kernel/random/boot_id, a UUID
// such as "4f5d3c1e-8a2b-4c6d-9e0f-1a2b3c4d5e6f\n".
func ParseBootID(s string) ([16]byte, error) {
	var id [16]byte
	h := strings.ReplaceAll(strings.TrimSpace(s), "-", "")
	if len(h) != 32 {
		return id, fmt.Errorf("boot id %q: not a UUID", s)
	}
	if _, err := hex.Decode(id[:], []byte(h)); err != nil {
		return id, fmt.Errorf("boot id %q: %w", s, err)
	}
	if id == [16]byte{} {
		return id, fmt.Errorf("boot id %q: all zero", s)
	}
	return id, nil
}
