package mqttpub_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoConfigImport: the publisher takes what it needs in its Options and
// does not depend on the agent's config package (issue 10).
func TestNoConfigImport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasSuffix(dep, "/agent/config") {
			t.Fatalf("agent/mqttpub depends on %s", dep)
		}
	}
}
