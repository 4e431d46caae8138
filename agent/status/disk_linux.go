package status

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// diskFree is the space left to unprivileged users on dir's file system,
// in bytes (what df shows as available).
func diskFree(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
