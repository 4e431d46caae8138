//go:build !linux

package testkit

// DropPageCache does nothing where posix_fadvise is not available.
func DropPageCache(string) error { return nil }
