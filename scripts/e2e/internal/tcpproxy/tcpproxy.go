// Package tcpproxy is a TCP relay the e2e harness puts between two programs
// so it can break the network between them the ways the field does:
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
//	p, _ := tcpproxy.Listen("127.0.0.1:0", brokerAddr)
//	defer p.Close()
//	p.SetMode(tcpproxy.Blackhole)
package tcpproxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
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

// Addr is the host:port clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget changes where new connections are relayed to.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
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
		pump(c, nil, &r.frozen)
		return
	}
	done := make(chan struct{}, 2)
	go func() { pump(c, r.upstream, &r.frozen); done <- struct{}{} }()
	go func() { pump(r.upstream, c, &r.frozen); done <- struct{}{} }()
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
// while frozen is set (or always, when dst is nil).
func pump(src, dst net.Conn, frozen *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && dst != nil && !frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
