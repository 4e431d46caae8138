package testkit_test

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// TestPickAddrBelowEphemeral: a picked port is free and outside the range
// outgoing connections draw from, so a server restarted on it finds it free.
func TestPickAddrBelowEphemeral(t *testing.T) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		lo, _ = strconv.Atoi(strings.Fields(string(b))[0])
	}
	for range 20 {
		addr := testkit.FreeAddr(t)
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port >= lo || port < 10000 {
			t.Fatalf("picked %s, want a port in 10000..%d", addr, lo-1)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("picked %s, which is not free: %v", addr, err)
		}
		l.Close()
	}
}
