package daemon_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// pets counts WATCHDOG=1 notifications.
type pets struct{ n atomic.Int64 }

func (p *pets) notify(state string) {
	if strings.Contains(state, "WATCHDOG=1") {
		p.n.Add(1)
	}
}

// petting reports whether the watchdog is petted during d.
func (p *pets) petting(d time.Duration) bool {
	before := p.n.Load()
	time.Sleep(d)
	return p.n.Load() > before
}

// lockedQueue is the buffer as the publisher sees it, with a lock its
// Peek takes: a test that holds the lock is a deadlock in the publisher.
type lockedQueue struct {
	mqttpub.Queue
	mu sync.Mutex
}

func (q *lockedQueue) Peek(after uint64, n int) ([]buffer.Record, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.Queue.Peek(after, n)
}

// TestWatchdogSeesTheWholeAgent (issue 13): the watchdog is fed while the
// agent works, also through a broker outage and a full disk; a publisher
// stuck on a lock, or a poll loop stuck in an append, stops the pets.
func TestWatchdogSeesTheWholeAgent(t *testing.T) {
	const every, slack = 50 * time.Millisecond, 200 * time.Millisecond
	start := func(t *testing.T, o daemon.Options, br *broker.Broker) *pets {
		t.Helper()
		p := &pets{}
		o.Notify = p.notify
		daemon.WithWatchdog(&o, every, slack)
		o.MQTT = func(po *mqttpub.Options) {
			po.StallTimeout = 300 * time.Millisecond
			po.KeepAlive, po.PingTimeout = time.Second, time.Second
			po.MinBackoff, po.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
		}
		cfg := parse(t, fmt.Sprintf(`device_id: pi-wd
sensors: [{name: sim-1, driver: sim, interval: 20ms}]
buffer: {path: %s}
mqtt: {url: %q}
clock: {hold_unsynced: 0s}  # the host's clock may never report synced
status_listen: 127.0.0.1:0
`, filepath.Join(t.TempDir(), "buffer.db"), br.URL()), nil)
		startAgent(t, cfg, o)
		testkit.WaitFor(t, "the first pets", 5*time.Second, func() bool { return p.n.Load() >= 3 })
		return p
	}

	t.Run("broker outage", func(t *testing.T) {
		br := broker.New(t, broker.Options{})
		p := start(t, daemon.Options{}, br)
		br.Stop()
		for i := range 2 { // past the publisher's StallTimeout: it is not a stall
			if !p.petting(time.Second) {
				t.Fatalf("a broker outage stopped the watchdog (second %d)", i+1)
			}
		}
		if err := br.Start(); err != nil {
			t.Fatal(err)
		}
		if !p.petting(time.Second) {
			t.Fatal("no pets after the broker came back")
		}
	})

	t.Run("full disk", func(t *testing.T) {
		br := broker.New(t, broker.Options{})
		o := daemon.Options{}
		daemon.WithAppendFault(&o, func() error { return fmt.Errorf("write: no space left on device") })
		p := start(t, o, br)
		if !p.petting(time.Second) {
			t.Fatal("a full disk stopped the watchdog; it is not a hang")
		}
	})

	t.Run("publisher stuck on a lock", func(t *testing.T) {
		br := broker.New(t, broker.Options{})
		q := &lockedQueue{}
		o := daemon.Options{}
		daemon.WithQueue(&o, func(b mqttpub.Queue) mqttpub.Queue { q.Queue = b; return q })
		p := start(t, o, br)
		q.mu.Lock() // the sender blocks in Peek with readings to send
		defer q.mu.Unlock()
		time.Sleep(500 * time.Millisecond) // StallTimeout and a pet or two
		if p.petting(time.Second) {
			t.Fatal("the watchdog is still fed with the publisher stuck on a lock")
		}
	})

	t.Run("poll loop stuck", func(t *testing.T) {
		br := broker.New(t, broker.Options{})
		var stuck atomic.Bool
		release := make(chan struct{})
		o := daemon.Options{}
		daemon.WithAppendFault(&o, func() error {
			if stuck.Load() {
				<-release
			}
			return nil
		})
		p := start(t, o, br)
		t.Cleanup(func() { close(release) }) // before the agent stops (cleanups run last first)
		stuck.Store(true)
		time.Sleep(2 * (20*time.Millisecond + slack)) // interval + read timeout + slack
		if p.petting(time.Second) {
			t.Fatal("the watchdog is still fed with a poll loop stuck in an append")
		}
	})
}
