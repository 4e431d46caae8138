package buffer_test

import (
	"os"
	"testing"
)

// TestMain doubles as the crash tests' child process: with crashChildEnv
// set, the test binary runs one child workload instead of the tests.
func TestMain(m *testing.M) {
	if path := os.Getenv(millionEnv); path != "" {
		os.Exit(millionChild(path))
	}
	if mode := os.Getenv(crashChildEnv); mode != "" {
		os.Exit(crashChild(mode, os.Getenv(crashPathEnv)))
	}
	os.Exit(m.Run())
}
