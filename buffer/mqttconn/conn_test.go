package mqttconn_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
)

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestKeepsOrderAndFlushesOnClose: many small writes arrive
// whole and in order, including those still pending at Close.
func TestKeepsOrderAndFlushesOnClose(t *testing.T) {
	c, s := tcpPair(t)
	bc := mqttconn.Wrap(c, mqttconn.Options{})
	var want bytes.Buffer
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(s)
		got <- b
	}()
	var mu sync.Mutex // paho writes from more than one goroutine
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				p := []byte{byte(g), byte(i), byte(i >> 8), 0xAA}
				mu.Lock()
				want.Write(p)
				if _, err := bc.Write(p); err != nil {
					t.Error(err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := bc.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			t.Fatalf("peer got %d bytes, want %d, or in another order", len(b), want.Len())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("peer did not see EOF after Close")
	}
	if _, err := bc.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

// TestReportsWriteErrors: once the socket fails, Write says so.
func TestReportsWriteErrors(t *testing.T) {
	c, s := tcpPair(t)
	bc := mqttconn.Wrap(c, mqttconn.Options{WriteTimeout: 100 * time.Millisecond})
	s.Close()
	c.(*net.TCPConn).CloseWrite()
	var err error
	for deadline := time.Now().Add(5 * time.Second); err == nil && time.Now().Before(deadline); {
		_, err = bc.Write(make([]byte, 4096))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("no error writing to a closed connection")
	}
	if errors.Is(err, net.ErrClosed) {
		return // our own close after the failure: fine too
	}
}

// TestCoalesceKeepsOrder: with a coalescing delay (the forwarder's PUBACKs)
// small writes still arrive whole and in order, and a lone one goes out
// without waiting for company beyond the delay.
func TestCoalesceKeepsOrder(t *testing.T) {
	c, s := tcpPair(t)
	bc := mqttconn.Wrap(c, mqttconn.Options{CoalesceDelay: 200 * time.Microsecond})
	one := make([]byte, 4)
	if _, err := bc.Write([]byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s, one); err != nil || !bytes.Equal(one, []byte{1, 2, 3, 4}) {
		t.Fatalf("lone write: %v %v", one, err)
	}
	var want bytes.Buffer
	for i := range 3000 {
		p := []byte{byte(i), byte(i >> 8)}
		want.Write(p)
		if _, err := bc.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("burst arrived changed (%v)", err)
	}
}
