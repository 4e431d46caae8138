package tcpproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer echoes lines back until the client closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func startProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := Listen("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and waits up to wait for its echo.
func roundTrip(c net.Conn, r *bufio.Reader, wait time.Duration) error {
	c.SetDeadline(time.Now().Add(wait))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return errors.New("bad echo " + line)
	}
	return nil
}

func TestModes(t *testing.T) {
	p := startProxy(t)
	c, r := dial(t, p)
	if err := roundTrip(c, r, 2*time.Second); err != nil {
		t.Fatalf("pass: %v", err)
	}

	p.SetMode(Blackhole)
	err := roundTrip(c, r, 200*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blackhole: got %v, want a timeout (no close, no data)", err)
	}
	c2, r2 := dial(t, p) // accepted, then silent
	if err := roundTrip(c2, r2, 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blackhole, new conn: got %v, want a timeout", err)
	}

	p.SetMode(Pass)
	if err := roundTrip(c, r, 2*time.Second); err == nil {
		t.Fatal("black-holed connection still works after the outage; want it reset")
	}
	c3, r3 := dial(t, p)
	if err := roundTrip(c3, r3, 2*time.Second); err != nil {
		t.Fatalf("pass after blackhole: %v", err)
	}

	p.SetMode(Refuse)
	if err := roundTrip(c3, r3, 2*time.Second); err == nil {
		t.Fatal("refuse: open connection still works")
	}
	c4, r4 := dial(t, p)
	if err := roundTrip(c4, r4, 2*time.Second); err == nil {
		t.Fatal("refuse: new connection works")
	}

	p.SetMode(Pass)
	c5, r5 := dial(t, p)
	if err := roundTrip(c5, r5, 2*time.Second); err != nil {
		t.Fatalf("pass after refuse: %v", err)
	}
	if n := len(p.AcceptsSince(time.Time{})); n != 5 {
		t.Fatalf("AcceptsSince = %d accepts, want 5", n)
	}
}

// TestDelay: a round trip through a delayed proxy takes at least twice the
// one-way delay, and lifting the delay on an open connection keeps the
// bytes in order.
func TestDelay(t *testing.T) {
	p := startProxy(t)
	const oneWay = 40 * time.Millisecond
	p.SetDelay(oneWay, 0)
	if d, j := p.Delay(); d != oneWay || j != 0 {
		t.Fatalf("Delay() = %v, %v", d, j)
	}
	c, r := dial(t, p)
	for range 3 {
		start := time.Now()
		if err := roundTrip(c, r, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < 2*oneWay {
			t.Fatalf("round trip took %v, want at least %v", el, 2*oneWay)
		}
	}
	p.SetDelay(0, 0)
	if err := roundTrip(c, r, 5*time.Second); err != nil {
		t.Fatalf("after lifting the delay: %v", err)
	}
}

// TestJitterKeepsOrder sends numbered lines one by one through a proxy with
// more jitter than delay: every line must come back, in order.
func TestJitterKeepsOrder(t *testing.T) {
	p := startProxy(t)
	p.SetDelay(time.Millisecond, 5*time.Millisecond)
	c, r := dial(t, p)
	const n = 500
	go func() {
		for i := range n {
			if _, err := fmt.Fprintf(c, "%d\n", i); err != nil {
				return
			}
			if i%50 == 0 {
				time.Sleep(time.Millisecond) // separate reads, so chunks get different hold times
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if want := fmt.Sprintf("%d\n", i); line != want {
			t.Fatalf("got %q, want %q: the proxy reordered bytes", line, want)
		}
	}
}

// TestDelayedBlackhole: chunks held on a delayed line when the black hole
// starts are dropped, not delivered late.
func TestDelayedBlackhole(t *testing.T) {
	p := startProxy(t)
	p.SetDelay(100*time.Millisecond, 0)
	c, r := dial(t, p)
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // read by the proxy, held on the line
	p.SetMode(Blackhole)
	c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
	if line, err := r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %q, %v; want nothing through the black hole", line, err)
	}
}
