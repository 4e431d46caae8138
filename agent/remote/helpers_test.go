package remote_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// key is the fleet key pair of a test.
type key = sign.Signer

func newKey(t *testing.T) *key {
	t.Helper()
	k, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const localYAML = `device_id: pi-1
sensors:
  - {name: sim-1, driver: sim, interval: 1s}
  - {name: sim-2, driver: sim, interval: 2s}
buffer:
  path: BUF
mqtt:
  url: tcp://127.0.0.1:1883
fleet:
  group: greenhouses
  grace: 30s
`

func localConfig(t *testing.T) *config.Config {
	t.Helper()
	y := strings.ReplaceAll(localYAML, "BUF", filepath.Join(t.TempDir(), "buffer.db"))
	c, err := config.Parse([]byte(y), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func doc(t *testing.T, k remote.Signer, l remote.Level, target string, version uint64, cfg map[string]any) []byte {
	t.Helper()
	p, err := remote.SignConfig(remote.Doc{Level: l, Target: target, Version: version, Issued: time.Now(), Config: cfg}, k)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// applier records what the manager applies; stored says whether readings
// are being stored.
type applier struct {
	mu      sync.Mutex
	applied []*config.Config
	restart bool
	stored  func(since time.Time) error
	notify  chan *config.Config
}

func newApplier() *applier {
	return &applier{stored: func(time.Time) error { return nil }, notify: make(chan *config.Config, 16)}
}

func (a *applier) Apply(_ context.Context, c *config.Config) (bool, error) {
	a.mu.Lock()
	a.applied = append(a.applied, c)
	r := a.restart
	a.mu.Unlock()
	a.notify <- c
	return r, nil
}

func (a *applier) Stored(since time.Time) error {
	a.mu.Lock()
	f := a.stored
	a.mu.Unlock()
	return f(since)
}
