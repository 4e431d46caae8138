package broker_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// TestMosquittoConfigExtraReplaces: an Extra line replaces the default with
// the same key and keeps repeatable keys.
func TestMosquittoConfigExtraReplaces(t *testing.T) {
	path, err := broker.MosquittoConfig{Addr: "127.0.0.1:1883", Dir: t.TempDir(),
		Extra: []string{"max_queued_messages 1000", "log_type notice"}}.Write()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for want, n := range map[string]int{"max_queued_messages ": 1, "max_queued_messages 1000\n": 1, "log_type ": 3, "listener 1883 127.0.0.1\n": 1} {
		if got := strings.Count(conf, want); got != n {
			t.Errorf("%q appears %d times, want %d:\n%s", want, got, n, conf)
		}
	}
}

// TestRestartKeepsPorts: a stopped broker starts again on the same ports.
func TestRestartKeepsPorts(t *testing.T) {
	b := broker.New(t, broker.Options{})
	addr := b.Addr
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("Addr %s: the picked port was not recorded", addr)
	}
	b.Stop()
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if b.Addr != addr {
		t.Fatalf("restarted on %s, was %s", b.Addr, addr)
	}
}

// TestStopWhileClientsLeave: Stop returns while clients are leaving.
// mochi's own listener Close deadlocked here (Clients.GetByListener takes
// the read lock twice; a leaving client's Delete queued its write lock
// between them), hanging a CI run for its whole test timeout.
func TestStopWhileClientsLeave(t *testing.T) {
	// Not New: its cleanup would Stop again and wait forever behind a hung
	// Stop instead of failing.
	b, err := broker.Start(broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 40 {
		if err := b.Start(); err != nil { // a no-op on the first round
			t.Fatal(err)
		}
		conns := make([]net.Conn, 30)
		for i := range conns {
			conns[i] = connect(t, b.Addr, fmt.Sprintf("c%d-%d", round, i))
		}
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() { c.Close() })
		}
		stopped := make(chan struct{})
		go func() { b.Stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("round %d: Stop has not returned in 30 s:\n%s", round, buf[:runtime.Stack(buf, true)])
		}
		wg.Wait()
	}
}

// connect opens an MQTT 3.1.1 clean session with client id id and waits
// for its CONNACK.
func connect(t *testing.T, addr, id string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	body := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(id))}, id...)
	if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x: %v", ack, err)
	}
	return c
}
