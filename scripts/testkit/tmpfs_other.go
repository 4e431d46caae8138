//go:build !linux

package testkit

import "testing"

// Tmpfs skips: mounting a tmpfs is Linux only.
func Tmpfs(tb testing.TB, size int64) string {
	tb.Helper()
	tb.Skip("skipping: a tmpfs for full-disk tests needs Linux")
	return ""
}

// Fill is Linux only, like Tmpfs.
func Fill(tb testing.TB, dir string, leave int64) string {
	tb.Helper()
	tb.Skip("skipping: needs Linux")
	return ""
}
