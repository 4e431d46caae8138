package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSettings make a test cluster quick: no fsync (the data still reaches
// the kernel, so a crash of the server loses nothing; only a crash of the
// machine would).
var TestSettings = map[string]string{"fsync": "off", "full_page_writes": "off"}

// ForTest starts a cluster of its own for tb and removes it when tb ends.
// Without PostgreSQL binaries it skips tb with the reason, or fails it when
// CI=true.
func ForTest(tb testing.TB) *Cluster {
	tb.Helper()
	c, err := startForTest()
	if err != nil {
		skipOrFail(tb, err)
	}
	tb.Cleanup(func() {
		if err := c.Remove(); err != nil {
			tb.Errorf("pgcluster: %v", err)
		}
	})
	return c
}

func startForTest() (*Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return Start(ctx, Options{Settings: TestSettings})
}

func skipOrFail(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, ErrNotFound) && os.Getenv("CI") != "true" {
		tb.Skipf("skipping: %v (with CI=true this fails)", err)
	}
	tb.Fatalf("pgcluster: %v", err)
}

// Shared is one cluster for a whole test package, started on first use;
// each test gets a database of its own. Stop it from TestMain:
//
//	var pg pgcluster.Shared
//	func TestMain(m *testing.M) { code := m.Run(); pg.Close(); os.Exit(code) }
type Shared struct {
	once sync.Once
	c    *Cluster
	err  error
	mu   sync.Mutex
	n    int
}

// Cluster returns the shared cluster, starting it if needed (skipping or
// failing tb as ForTest does).
func (s *Shared) Cluster(tb testing.TB) *Cluster {
	tb.Helper()
	s.once.Do(func() { s.c, s.err = startForTest() })
	if s.err != nil {
		skipOrFail(tb, s.err)
	}
	return s.c
}

// Database creates a fresh database for tb on the shared cluster and returns its URL.
func (s *Shared) Database(tb testing.TB) string {
	tb.Helper()
	c := s.Cluster(tb)
	s.mu.Lock()
	s.n++
	name := fmt.Sprintf("t%d_%s", s.n, sanitize(tb.Name()))
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, err := c.CreateDatabase(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	return url
}

// Close removes the shared cluster, if it was started.
func (s *Shared) Close() {
	if s.c != nil {
		_ = s.c.Remove()
	}
}

// sanitize makes a test name a short lower-case identifier.
func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
		if b.Len() >= 40 {
			break
		}
	}
	return b.String()
}
