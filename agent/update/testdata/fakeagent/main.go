// Command fakeagent stands in for an over-the-air edge-agent in the
// launcher's tests: it says how it was started and exits with
// FAKEAGENT_EXIT (default 1, a version that crashes at start).
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	fmt.Printf("fakeagent launched=%s args=%s\n", os.Getenv("EDGE_AGENT_LAUNCHED"), strings.Join(os.Args[1:], " "))
	code, err := strconv.Atoi(os.Getenv("FAKEAGENT_EXIT"))
	if err != nil {
		code = 1
	}
	os.Exit(code)
}
