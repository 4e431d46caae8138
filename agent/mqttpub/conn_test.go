package mqttpub

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
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

// TestBatchConnKeepsOrderAndFlushesOnClose: many small writes arrive
// whole and in order, including those still pending at Close.
func TestBatchConnKeepsOrderAndFlushesOnClose(t *testing.T) {
	c, s := tcpPair(t)
	bc := newBatchConn(c)
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

// TestBatchConnReportsWriteErrors: once the socket fails, Write says so.
func TestBatchConnReportsWriteErrors(t *testing.T) {
	c, s := tcpPair(t)
	bc := newBatchConn(&deadlineConn{Conn: c, timeout: 100 * time.Millisecond})
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
