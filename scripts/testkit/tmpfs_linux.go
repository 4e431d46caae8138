package testkit

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs of size bytes on a new temporary directory, for
// tests of a full disk, and unmounts it at cleanup. Mounting needs root
// (CAP_SYS_ADMIN): where it is refused the test is skipped saying so, or,
// under CI=true (which runs as root), it fails.
func Tmpfs(tb testing.TB, size int64) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("mount a %d-byte tmpfs on %s: %v (CI runs as root and must be able to)", size, dir, err)
		}
		tb.Skipf("skipping: cannot mount a tmpfs for a full-disk test (%v; needs root)", err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Fill writes a file in dir until its filesystem has at most leave bytes
// free (0: until the disk is full) and returns the file's path; removing it
// gives the space back.
func Fill(tb testing.TB, dir string, leave int64) string {
	tb.Helper()
	f, err := os.CreateTemp(dir, "filler-*")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		var st unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
			tb.Fatal(err)
		}
		free := int64(st.Bavail) * int64(st.Bsize)
		if free <= leave {
			return f.Name()
		}
		n := min(int64(len(chunk)), free-leave)
		if _, err := f.Write(chunk[:n]); err != nil {
			if leave == 0 {
				return f.Name() // full
			}
			tb.Fatalf("fill %s: %v", dir, err)
		}
	}
}
