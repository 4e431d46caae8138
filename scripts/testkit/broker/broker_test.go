package broker_test

import (
	"os"
	"strings"
	"testing"

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
