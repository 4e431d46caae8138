package testkit

import (
	"os"

	"golang.org/x/sys/unix"
)

// DropPageCache writes the file's dirty pages and asks the kernel to forget
// its cached ones, so the next reader reads it from disk (and, in a memory
// cgroup, is charged for the pages it brings in).
func DropPageCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
