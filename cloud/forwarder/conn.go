package forwarder

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// paho reads each packet with three or more small Reads and writes each
// PUBACK with its own Write; at tens of thousands of messages a second
// those syscalls cost more than everything else. bufferedConn gives paho a
// buffered reader and coalesces writes: Write queues the bytes and a flusher
// goroutine writes whatever accumulated in one syscall. When idle, a write
// goes out at once; under load, PUBACKs share segments. Order is preserved.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	pending []byte
	err     error // first write error, returned by later Writes
	closed  bool
	kick    chan struct{}
	done    chan struct{}
}

const (
	readBuffer   = 64 << 10
	maxPending   = 1 << 20 // beyond this, Write waits for the flusher
	writeTimeout = 10 * time.Second
	// A write smaller than coalesceBelow waits coalesceDelay for company.
	coalesceBelow = 1024
	coalesceDelay = 200 * time.Microsecond
)

func newBufferedConn(c net.Conn) *bufferedConn {
	b := &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, readBuffer), kick: make(chan struct{}, 1), done: make(chan struct{})}
	go b.flusher()
	return b
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *bufferedConn) Write(p []byte) (int, error) {
	for {
		b.mu.Lock()
		if b.err != nil || b.closed {
			err := b.err
			b.mu.Unlock()
			if err == nil {
				err = net.ErrClosed
			}
			return 0, err
		}
		if len(b.pending) < maxPending {
			b.pending = append(b.pending, p...)
			b.mu.Unlock()
			select {
			case b.kick <- struct{}{}:
			default:
			}
			return len(p), nil
		}
		b.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

// SetWriteDeadline is ignored: the flusher sets its own deadline per write.
func (b *bufferedConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline applies to reads only, for the same reason.
func (b *bufferedConn) SetDeadline(t time.Time) error { return b.Conn.SetReadDeadline(t) }

func (b *bufferedConn) flusher() {
	defer close(b.done)
	var spare []byte
	for range b.kick {
		// PUBACKs gain nothing from leaving a few microseconds earlier (Kafka
		// already has the records), so let a burst gather: one syscall for many.
		b.mu.Lock()
		small := len(b.pending) < coalesceBelow && !b.closed
		b.mu.Unlock()
		if small {
			time.Sleep(coalesceDelay)
		}
		b.mu.Lock()
		out := b.pending
		b.pending = spare[:0]
		closed := b.closed
		b.mu.Unlock()
		if len(out) > 0 {
			_ = b.Conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := b.Conn.Write(out); err != nil {
				b.mu.Lock()
				b.err = err
				b.mu.Unlock()
				return
			}
		}
		spare = out
		if closed {
			return
		}
	}
}

// Close writes what is queued (DISCONNECT, last PUBACKs), then closes.
func (b *bufferedConn) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return b.Conn.Close()
	}
	b.closed = true
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	select {
	case <-b.done:
	case <-time.After(time.Second):
	}
	return b.Conn.Close()
}

// dialMQTT is paho's CustomOpenConnectionFn: TCP or TLS, wrapped in bufferedConn.
func dialMQTT(tc *tls.Config) mqtt.OpenConnectionFunc {
	return func(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), o.ConnectTimeout)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", uri.Host)
		if err != nil {
			return nil, err
		}
		if tc != nil {
			cfg := tc.Clone()
			if cfg.ServerName == "" {
				cfg.ServerName = uri.Hostname()
			}
			tlsConn := tls.Client(c, cfg)
			if err := tlsConn.HandshakeContext(ctx); err != nil {
				_ = c.Close()
				return nil, err
			}
			c = tlsConn
		}
		return newBufferedConn(c), nil
	}
}

// copyingStore is paho's memory store, except that an outbound PUBLISH is
// stored, and handed back, as a copy. After a reconnect paho's resume() sets
// the DUP flag on the stored packet while the previous connection's writer
// may still be encoding that same packet: a data race in paho v1.5.x
// (eclipse-paho/paho.mqtt.golang issue 703) that the confirmations, the
// forwarder's only outbound QoS 1 messages, run into when the broker goes
// away with one in flight. Inbound messages (every reading) pass through
// untouched.
type copyingStore struct{ mqtt.Store }

func newCopyingStore() copyingStore { return copyingStore{mqtt.NewMemoryStore()} }

func (s copyingStore) Put(key string, m packets.ControlPacket) { s.Store.Put(key, copyPublish(key, m)) }

func (s copyingStore) Get(key string) packets.ControlPacket {
	return copyPublish(key, s.Store.Get(key))
}

func copyPublish(key string, m packets.ControlPacket) packets.ControlPacket {
	if p, ok := m.(*packets.PublishPacket); ok && strings.HasPrefix(key, "o.") { // paho's outbound key prefix
		cp := *p // FixedHeader (with Dup) is a value: the copy has its own
		return &cp
	}
	return m
}
