//go:build !linux

package status

// diskFree is not measured outside Linux (the agent runs on a Pi).
func diskFree(string) (int64, error) { return 0, nil }
