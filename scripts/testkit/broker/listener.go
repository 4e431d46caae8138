package broker

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tcpListener is mochi's TCP listener without its data race (its Serve
// loop shares one err variable with the per-connection goroutines, which
// the race detector reports whenever a client leaves while another
// connects, which is exactly what reconnect tests do).
type tcpListener struct {
	id, addr string
	tls      *tls.Config

	mu     sync.Mutex
	l      net.Listener
	closed bool
}

var _ listeners.Listener = (*tcpListener)(nil)

func newTCPListener(id, addr string, tc *tls.Config) *tcpListener {
	return &tcpListener{id: id, addr: addr, tls: tc}
}

func (t *tcpListener) ID() string       { return t.id }
func (t *tcpListener) Protocol() string { return "tcp" }
func (t *tcpListener) Address() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addr
}

func (t *tcpListener) Init(*slog.Logger) error {
	l, err := net.Listen("tcp", t.addr)
	if err != nil {
		return err
	}
	if t.tls != nil {
		l = tls.NewListener(l, t.tls)
	}
	t.mu.Lock()
	t.l = l
	t.addr = l.Addr().String() // the port the kernel picked for :0
	t.mu.Unlock()
	return nil
}

func (t *tcpListener) Serve(establish listeners.EstablishFn) {
	t.mu.Lock()
	l := t.l
	t.mu.Unlock()
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go func() { _ = establish(t.id, conn) }()
	}
}

func (t *tcpListener) Close(closeClients listeners.CloseFn) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	l := t.l
	t.mu.Unlock()
	closeClients(t.id)
	if l != nil {
		l.Close()
	}
}
