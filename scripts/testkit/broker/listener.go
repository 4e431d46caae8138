package broker

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tcpListener is mochi's TCP listener without its two faults:
//   - its Serve loop shares one err variable with the per-connection
//     goroutines, which the race detector reports whenever a client leaves
//     while another connects, which is exactly what reconnect tests do;
//   - its Close calls back into the server's closeListenerClients, whose
//     Clients.GetByListener takes the clients' read lock twice (once more in
//     Len). A client leaving at that moment queues Clients.Delete's write
//     lock between the two, and the broker deadlocks: a forwarder test hung
//     for the whole 15-minute test timeout in CI that way. This listener
//     closes its own connections instead, which every client sees as the
//     broker going away, as it would if the process stopped.
type tcpListener struct {
	id, addr string
	tls      *tls.Config

	mu     sync.Mutex
	l      net.Listener
	conns  map[net.Conn]struct{}
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
		if !t.track(conn) {
			conn.Close()
			return
		}
		go func() {
			defer t.untrack(conn)
			_ = establish(t.id, conn)
		}()
	}
}

// track records an open connection; false once the listener is closed.
func (t *tcpListener) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = make(map[net.Conn]struct{})
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tcpListener) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	c.Close()
}

// Close stops accepting and closes every connection. It does not call
// closeClients (see the type's comment).
func (t *tcpListener) Close(listeners.CloseFn) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	l, conns := t.l, t.conns
	t.conns = nil
	t.mu.Unlock()
	if l != nil {
		l.Close()
	}
	for c := range conns {
		c.Close()
	}
}
