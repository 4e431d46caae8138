// Package tcpproxy is the fault TCP relay tests, benchmarks and the e2e
// harness put between two programs so they can break the network between
// them the ways the field does:
//
//   - Blackhole: every byte is silently dropped in both directions and no
//     connection is closed, like a cable pulled or a NAT entry gone stale.
//     New connections are accepted and then hang the same way. Only the
//     endpoints' own keepalives can notice.
//   - Refuse: every open connection is closed and new ones are closed at
//     once, like a server that went away.
//
// Back in Pass mode, connections that were black-holed are closed (the
// middlebox lost their state, so the first packet after the outage gets a
// reset) and new connections are relayed again. The proxy does not look at
// the bytes, so TLS goes through it end to end.
//
// SetDelay puts distance between the two sides: every chunk relayed, in
// either direction, is held for a one-way delay (plus a random jitter) before
// it is written on, so a request and its answer pay twice the delay, as over
// a WAN. Bytes keep their order within a connection, and the line has no
// bandwidth limit of its own.
//
//	p, _ := tcpproxy.Listen("127.0.0.1:0", brokerAddr)
//	defer p.Close()
//	p.SetDelay(10*time.Millisecond, time.Millisecond) // 20 ms round trip
//	p.SetMode(tcpproxy.Blackhole)
package tcpproxy

import (
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Mode is how the proxy treats traffic.
type Mode int

// The proxy's modes.
const (
	Pass      Mode = iota // relay bytes
	Blackhole             // drop bytes, close nothing
	Refuse                // close everything
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Blackhole:
		return "blackhole"
	case Refuse:
		return "refuse"
	}
	return "unknown"
}

// Proxy relays connections from its listener to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	mode    Mode
	conns   map[*relay]struct{}
	accepts []time.Time
	closed  bool
	wg      sync.WaitGroup

	delay  atomic.Int64 // one-way, nanoseconds
	jitter atomic.Int64 // nanoseconds, added at random up to this
}

type relay struct {
	client   net.Conn
	upstream net.Conn // nil for connections accepted while black-holed
	frozen   atomic.Bool
	once     sync.Once
	closed   chan struct{}
}

func (r *relay) close() {
	r.once.Do(func() {
		close(r.closed)
		r.client.Close()
		if r.upstream != nil {
			r.upstream.Close()
		}
	})
}

// Listen starts a proxy on addr (use "127.0.0.1:0") relaying to target.
func Listen(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*relay]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// New starts a proxy on a free loopback port relaying to target; it closes
// when the test ends.
func New(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := Listen("127.0.0.1:0", target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr is the host:port clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget changes where new connections are relayed to.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// SetDelay holds every chunk relayed from now on, in each direction, for
// oneWay plus a random part of jitter (a round trip costs twice that).
// Chunks leave in the order they came in: a chunk never overtakes the one
// before it, so jitter delays but does not reorder. Zero and zero relay
// at once.
func (p *Proxy) SetDelay(oneWay, jitter time.Duration) {
	p.delay.Store(int64(max(oneWay, 0)))
	p.jitter.Store(int64(max(jitter, 0)))
}

// Delay returns the settings of SetDelay.
func (p *Proxy) Delay() (oneWay, jitter time.Duration) {
	return time.Duration(p.delay.Load()), time.Duration(p.jitter.Load())
}

// hold is how long a chunk read now waits before it is written on.
func (p *Proxy) hold() time.Duration {
	d, j := p.delay.Load(), p.jitter.Load()
	if j > 0 {
		d += rand.Int64N(j)
	}
	return time.Duration(d)
}

// Mode is the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// SetMode switches modes; see the package doc for what each switch does to
// open connections.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.mode
	p.mode = m
	for r := range p.conns {
		switch {
		case m == Refuse, m == Pass && old == Blackhole && r.frozen.Load():
			delete(p.conns, r)
			r.close()
		case m == Blackhole:
			r.frozen.Store(true)
		}
	}
}

// AcceptsSince returns when connections were accepted at or after t: the
// harness uses it to see when a client noticed a dead link and redialed.
func (p *Proxy) AcceptsSince(t time.Time) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Time
	for _, a := range p.accepts {
		if !a.Before(t) {
			out = append(out, a)
		}
	}
	return out
}

// Close stops the listener and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for r := range p.conns {
		r.close()
	}
	p.conns = map[*relay]struct{}{}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		p.accepts = append(p.accepts, time.Now())
		mode, target, closed := p.mode, p.target, p.closed
		p.mu.Unlock()
		if closed || mode == Refuse {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.handle(c, mode, target)
	}
}

func (p *Proxy) handle(c net.Conn, mode Mode, target string) {
	defer p.wg.Done()
	r := &relay{client: c, closed: make(chan struct{})}
	if mode == Pass {
		up, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			c.Close()
			return
		}
		r.upstream = up
	} else {
		r.frozen.Store(true)
	}
	p.mu.Lock()
	if p.closed || p.mode == Refuse {
		p.mu.Unlock()
		r.close()
		return
	}
	if p.mode == Blackhole {
		r.frozen.Store(true)
	}
	p.conns[r] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, r)
		p.mu.Unlock()
		r.close()
	}()
	if r.upstream == nil {
		p.pump(c, nil, &r.frozen)
		return
	}
	done := make(chan struct{}, 2)
	go func() { p.pump(c, r.upstream, &r.frozen); done <- struct{}{} }()
	go func() { p.pump(r.upstream, c, &r.frozen); done <- struct{}{} }()
	<-done
	if r.frozen.Load() {
		// A black hole hides a close from the other side: hold it open
		// until the outage ends (SetMode closes frozen relays).
		<-r.closed
	}
	r.close()
	<-done
}

// pump copies src to dst until either fails, discarding what it reads
// while frozen is set (or always, when dst is nil). Once a delay is set,
// chunks go through a line (see SetDelay) for the rest of the connection,
// so a chunk read after the delay is lifted cannot overtake one still held.
func (p *Proxy) pump(src, dst net.Conn, frozen *atomic.Bool) {
	buf := make([]byte, 32<<10)
	var ln *line
	defer func() {
		if ln != nil {
			ln.close()
		}
	}()
	for {
		n, err := src.Read(buf)
		if n > 0 && dst != nil && !frozen.Load() {
			if ln == nil && p.delay.Load() == 0 && p.jitter.Load() == 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			} else {
				if ln == nil {
					ln = newLine(dst, frozen)
				}
				if !ln.send(buf[:n], p.hold()) {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// line delivers chunks to dst after their hold time, in order, from its own
// goroutine, so the reader keeps reading while earlier chunks are held (the
// bytes in flight on a long link).
type line struct {
	dst    net.Conn
	frozen *atomic.Bool
	q      chan chunk
	last   time.Time // delivery time of the previous chunk (sender side)
	failed chan struct{}
	done   chan struct{}
}

type chunk struct {
	b  []byte
	at time.Time
}

func newLine(dst net.Conn, frozen *atomic.Bool) *line {
	l := &line{dst: dst, frozen: frozen, q: make(chan chunk, 4096), failed: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

// send queues a copy of b for delivery after hold (never before the chunk
// queued before it); false once the destination failed.
func (l *line) send(b []byte, hold time.Duration) bool {
	at := time.Now().Add(hold)
	if at.Before(l.last) {
		at = l.last
	}
	l.last = at
	select {
	case l.q <- chunk{b: append([]byte(nil), b...), at: at}:
		return true
	case <-l.failed:
		return false
	}
}

// close delivers what is queued (a FIN follows the data sent before it),
// then returns.
func (l *line) close() {
	close(l.q)
	<-l.done
}

func (l *line) run() {
	defer close(l.done)
	t := time.NewTimer(0)
	<-t.C
	for c := range l.q {
		if d := time.Until(c.at); d > 0 {
			t.Reset(d)
			<-t.C
		}
		if l.frozen.Load() {
			continue
		}
		if _, err := l.dst.Write(c.b); err != nil {
			close(l.failed)
			for range l.q { // drain so send never blocks on a full queue
			}
			return
		}
	}
}
