package mqttpub

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// bufferedConn reads through a bufio.Reader.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// deadlineConn bounds every write, so paho's writers (which set no
// deadline) fail on a black-holed link instead of blocking forever.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// maxPending bounds the bytes batchConn holds before Write blocks.
const maxPending = 256 << 10

// batchConn coalesces writes: Write appends to a buffer and one flusher
// goroutine writes whatever accumulated, so a burst of small MQTT packets
// becomes a few large writes. Bytes go out in Write order. A write error is
// returned by the next Write (and closes the connection, so paho's reader
// notices at once). Close flushes what is pending first, for at most
// closeFlush.
type batchConn struct {
	net.Conn
	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	err     error
	closing bool
	wake    chan struct{}
	done    chan struct{}
	once    sync.Once
}

const closeFlush = 500 * time.Millisecond

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.flusher()
	return b
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) >= maxPending && b.err == nil && !b.closing {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.closing {
		return 0, net.ErrClosed
	}
	b.buf = append(b.buf, p...)
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (b *batchConn) flusher() {
	defer close(b.done)
	var spare []byte
	for range b.wake {
		for {
			b.mu.Lock()
			if len(b.buf) == 0 {
				closing := b.closing
				b.mu.Unlock()
				if closing {
					return
				}
				break
			}
			// Swap buffers: writers fill the spare while this one is sent.
			data := b.buf
			b.buf = spare[:0]
			b.mu.Unlock()
			if _, err := b.Conn.Write(data); err != nil {
				b.mu.Lock()
				b.err = err
				b.cond.Broadcast()
				b.mu.Unlock()
				b.Conn.Close()
				return
			}
			spare = data
			b.mu.Lock()
			b.cond.Broadcast()
			b.mu.Unlock()
		}
	}
}

// Close flushes pending bytes (bounded by closeFlush) and closes.
func (b *batchConn) Close() error {
	b.once.Do(func() {
		b.mu.Lock()
		b.closing = true
		b.cond.Broadcast()
		b.mu.Unlock()
		select {
		case b.wake <- struct{}{}:
		default:
		}
		select {
		case <-b.done:
		case <-time.After(closeFlush):
		}
	})
	return b.Conn.Close()
}
