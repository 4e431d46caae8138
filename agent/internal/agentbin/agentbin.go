// Package agentbin builds the real edge-agent binary for tests that run it
// as a user would (CLI output, exit codes, SIGKILL crash tests).
//
//	var bin string
//	func TestMain(m *testing.M) { agentbin.Main(m, &bin) }
package agentbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds edge-agent the way `make build` ships it (static, trimmed,
// stripped) into a temporary directory, stores its path in *bin, runs the
// package's tests, removes the directory and exits with the tests' status.
func Main(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "edge-agent-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "edge-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", *bin,
		"github.com/edgepipe/sensorpipe/agent/cmd/edge-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build edge-agent: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
