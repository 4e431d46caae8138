package remote_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/remote"
)

// key is a test signer and verifier with the same purpose binding as
// buffer/sign: the signed bytes are the purpose, a zero byte, then msg.
type key struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newKey(t *testing.T) *key {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &key{pub, priv}
}

func bind(purpose string, msg []byte) []byte {
	return append(append([]byte(purpose), 0), msg...)
}

func (k *key) Sign(purpose string, msg []byte) ([]byte, error) {
	return ed25519.Sign(k.priv, bind(purpose, msg)), nil
}

func (k *key) Verify(purpose string, msg, sig []byte) error {
	if !ed25519.Verify(k.pub, bind(purpose, msg), sig) {
		return errors.New("bad signature")
	}
	return nil
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
