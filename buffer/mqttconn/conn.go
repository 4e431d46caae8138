package mqttconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"sync"
	"time"
)

// Options tune the connection; zero values mean the defaults noted.
type Options struct {
	TLS            *tls.Config   // nil: plain TCP; ServerName defaults to the URL's host
	ConnectTimeout time.Duration // TCP dial plus TLS handshake; default 15s
	KeepAlive      time.Duration // TCP keepalive probes; 0: Go's default
	// WriteTimeout bounds every socket write, so a black-holed link fails
	// the connection instead of blocking the writer; default 10s.
	WriteTimeout time.Duration
	ReadBuffer   int // bytes; default 32 KiB
	MaxPending   int // bytes queued before Write blocks; default 256 KiB
	// CoalesceDelay lets a flush of less than 1 KiB wait this long for more
	// packets to share its syscall (the forwarder's PUBACKs gain nothing
	// from leaving microseconds earlier); 0 writes at once.
	CoalesceDelay time.Duration
	// CloseFlush is how long Close waits to write what is queued (the
	// DISCONNECT, the last PUBACKs); default 500ms.
	CloseFlush time.Duration
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ConnectTimeout, 15*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.CloseFlush, 500*time.Millisecond)
	if o.ReadBuffer <= 0 {
		o.ReadBuffer = 32 << 10
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 256 << 10
	}
}

// coalesceBelow is the flush size under which CoalesceDelay applies.
const coalesceBelow = 1024

// Dial opens the TCP (and, with o.TLS, TLS) connection to the broker of u,
// on port 1883 (8883 with TLS) when u names none, and returns it wrapped
// for paho: the connection both programs hand paho through
// SetCustomOpenConnectionFn.
func Dial(ctx context.Context, u *url.URL, o Options) (*Conn, error) {
	o.defaults()
	host := u.Host
	if u.Port() == "" {
		port := "1883"
		if o.TLS != nil {
			port = "8883"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	d := &net.Dialer{KeepAlive: o.KeepAlive}
	raw, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	conn := raw
	if o.TLS != nil {
		cfg := o.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		conn = tc
	}
	c := Wrap(conn, o)
	c.raw = raw
	return c, nil
}

// Conn is what paho reads from and writes to. paho reads each packet with
// several tiny Reads (type, length, body) and writes each packet with its
// own Write; at tens of thousands of messages a second those syscalls (and
// TLS records) cost more than everything else. Conn reads through a buffer
// and coalesces writes: Write appends to a queue and one flusher goroutine
// writes whatever accumulated, so a burst of packets becomes a few large
// writes. Bytes go out in Write order. A write error is returned by the next
// Write and closes the socket at once, so paho's reader notices; Close
// writes what is queued first, for at most Options.CloseFlush.
type Conn struct {
	net.Conn          // TLS or TCP, what the flusher writes to
	raw      net.Conn // the socket itself, for Abort
	r        *bufio.Reader
	o        Options

	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	err     error
	closing bool
	wake    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// Wrap wraps an open connection (Dial does it for the broker's).
func Wrap(c net.Conn, o Options) *Conn {
	o.defaults()
	b := &Conn{Conn: c, raw: c, r: bufio.NewReaderSize(c, o.ReadBuffer), o: o,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.flusher()
	return b
}

// Read reads through the buffer.
func (b *Conn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Write queues p; it blocks only while MaxPending bytes wait.
func (b *Conn) Write(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.buf) >= b.o.MaxPending && b.err == nil && !b.closing {
		b.cond.Wait()
	}
	if err := b.err; err != nil || b.closing {
		b.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	b.buf = append(b.buf, p...)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// SetWriteDeadline is ignored: the flusher bounds each write itself
// (Options.WriteTimeout), and a caller's deadline would cut a queue that
// holds other writers' bytes.
func (b *Conn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline applies to reads only, for the same reason.
func (b *Conn) SetDeadline(t time.Time) error { return b.Conn.SetReadDeadline(t) }

func (b *Conn) flusher() {
	defer close(b.done)
	var spare []byte
	for range b.wake {
		if b.o.CoalesceDelay > 0 {
			b.mu.Lock()
			small := len(b.buf) < coalesceBelow && !b.closing
			b.mu.Unlock()
			if small {
				time.Sleep(b.o.CoalesceDelay)
			}
		}
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
			b.cond.Broadcast() // the queue is empty again
			b.mu.Unlock()
			_ = b.Conn.SetWriteDeadline(time.Now().Add(b.o.WriteTimeout))
			if _, err := b.Conn.Write(data); err != nil {
				b.mu.Lock()
				b.err = err
				b.cond.Broadcast()
				b.mu.Unlock()
				b.raw.Close()
				return
			}
			spare = data
		}
	}
}

// Close writes what is queued (bounded by Options.CloseFlush) and closes.
func (b *Conn) Close() error {
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
		case <-time.After(b.o.CloseFlush):
		}
	})
	return b.Conn.Close()
}

// Abort closes the socket at once, without flushing: for a link that
// stopped answering, where a flush could only wait.
func (b *Conn) Abort() error { return b.raw.Close() }
