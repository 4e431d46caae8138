// Command crashing is an edge-agent release that crashes at start, for
// the over-the-air test in scripts/test-systemd.sh: the launcher must roll
// it back after three starts.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "crashing: a broken release exits at start")
	os.Exit(1)
}
