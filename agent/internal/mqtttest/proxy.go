package mqtttest

import (
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a target. Blackhole makes it silently
// drop every byte in both directions without closing anything, the way a
// dead mobile link or a crashed NAT box behaves.
type Proxy struct {
	Addr   string
	target string
	l      net.Listener

	mu    sync.Mutex
	hole  bool
	conns map[net.Conn]bool // conns that saw the black hole are poisoned
}

// NewProxy listens on a free loopback port; it closes at cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), target: target, l: l, conns: map[net.Conn]bool{}}
	go p.accept()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for c := range p.conns {
			c.Close()
		}
	})
	return p
}

// Blackhole starts (true) or ends (false) dropping traffic. Ending it
// resets the connections that lost bytes (their streams are broken), as a
// real network eventually does.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hole = on
	if !on {
		for c, poisoned := range p.conns {
			if poisoned {
				c.Close()
				delete(p.conns, c)
			}
		}
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c] = p.hole
	p.conns[up] = p.hole
	p.mu.Unlock()
	go p.pipe(up, c)
	p.pipe(c, up)
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		hole := p.hole
		if hole {
			p.conns[src], p.conns[dst] = true, true
		}
		p.mu.Unlock()
		if hole {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}
