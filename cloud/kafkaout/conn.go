package kafkaout

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/apiversions"
	"github.com/segmentio/kafka-go/protocol/produce"
	"github.com/segmentio/kafka-go/protocol/saslauthenticate"
	"github.com/segmentio/kafka-go/protocol/saslhandshake"
)

// errConnClosed ends the calls still waiting when the producer closes a
// connection.
var errConnClosed = errors.New("kafkaout: connection closed")

// Produce versions this connection speaks: v3 is the first with record
// batches (magic 2), v8 the last kafka-go's protocol package encodes (and
// the first with per-record errors).
const (
	minProduceVersion = 3
	maxProduceVersion = 8
)

// brokerConn is one connection to a broker that carries Produce requests
// pipelined: send writes a request and returns without waiting for the
// answer, so several can be on the wire at once. Kafka handles one
// connection's requests one at a time, in the order they arrived, and
// answers in that order; so requests for one partition written in order on
// one connection are appended in that order, however many are in flight.
// That is what kafka-go's Transport cannot give: it sends one request per
// connection at a time and spreads concurrent ones over several
// connections, where Kafka may take them in any order.
//
// The first error (a failed write or read, a timeout, Close) kills the
// connection and fails every call still waiting; the producer dials anew.
type brokerConn struct {
	addr     string
	nc       net.Conn
	br       *bufio.Reader
	version  int16
	clientID string

	wmu sync.Mutex // one request on the wire at a time, in call order

	mu      sync.Mutex
	nextID  int32
	pending []*call // written, not yet answered, oldest first
	err     error   // set once, when the connection dies
	dead    chan struct{}
}

// call is one Produce request waiting for its answer.
type call struct {
	id       int32
	timeout  time.Duration // the answer is due by deadline = sent + timeout
	deadline time.Time
	done     chan struct{} // closed once res or err is set
	res      *produce.Response
	err      error
}

// dialBroker connects to addr with tr's dialer, TLS and SASL, learns the
// Produce version both sides speak, and starts the reader (owned by wg).
func dialBroker(ctx context.Context, tr *kafka.Transport, addr string, wg *sync.WaitGroup) (*brokerConn, error) {
	dial := tr.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: tr.DialTimeout}
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c := &brokerConn{addr: addr, nc: nc, clientID: tr.ClientID, dead: make(chan struct{})}
	if err := c.handshake(ctx, tr); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.readLoop()
	}()
	return c, nil
}

// handshake runs TLS, ApiVersions and SASL, each one round trip at a time,
// under ctx's deadline.
func (c *brokerConn) handshake(ctx context.Context, tr *kafka.Transport) error {
	if d, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(d)
		defer c.nc.SetDeadline(time.Time{})
	}
	if tr.TLS != nil {
		cfg := tr.TLS.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(c.addr)
			cfg.ServerName = host
		}
		tc := tls.Client(c.nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		c.nc = tc
	}
	c.br = bufio.NewReaderSize(c.nc, 16<<10)
	rw := struct {
		io.Reader
		io.Writer
	}{c.br, c.nc}
	roundTrip := func(version int16, req protocol.Message) (protocol.Message, error) {
		c.nextID++
		return protocol.RoundTrip(rw, version, c.nextID, c.clientID, req)
	}

	msg, err := roundTrip(0, &apiversions.Request{})
	if err != nil {
		return fmt.Errorf("api versions: %w", err)
	}
	av := msg.(*apiversions.Response)
	if av.ErrorCode != 0 {
		return fmt.Errorf("api versions: %w", kafka.Error(av.ErrorCode))
	}
	c.version = -1
	for _, k := range av.ApiKeys {
		if protocol.ApiKey(k.ApiKey) == protocol.Produce {
			c.version = min(k.MaxVersion, maxProduceVersion)
		}
	}
	if c.version < minProduceVersion {
		return fmt.Errorf("the broker speaks Produce up to v%d, v%d is needed (Kafka 0.11 or later)", c.version, minProduceVersion)
	}

	if tr.SASL == nil {
		return nil
	}
	msg, err = roundTrip(1, &saslhandshake.Request{Mechanism: tr.SASL.Name()})
	if err != nil {
		return fmt.Errorf("sasl handshake: %w", err)
	}
	if code := msg.(*saslhandshake.Response).ErrorCode; code != 0 {
		return fmt.Errorf("sasl handshake: %w", kafka.Error(code))
	}
	sess, state, err := tr.SASL.Start(ctx)
	if err != nil {
		return fmt.Errorf("sasl: %w", err)
	}
	for done := false; !done; {
		msg, err := roundTrip(0, &saslauthenticate.Request{AuthBytes: state})
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return kafka.SASLAuthenticationFailed // the broker hangs up on a failed exchange
		}
		if err != nil {
			return fmt.Errorf("sasl authenticate: %w", err)
		}
		res := msg.(*saslauthenticate.Response)
		if res.ErrorCode != 0 {
			return fmt.Errorf("sasl authenticate: %w: %s", kafka.Error(res.ErrorCode), res.ErrorMessage)
		}
		if done, state, err = sess.Next(ctx, res.AuthBytes); err != nil {
			return fmt.Errorf("sasl: %w", err)
		}
	}
	return nil
}

// encode renders req as a request of this connection's Produce version
// into buf with a zero correlation id, which send fills in: compression and
// encoding happen outside the connection's lock.
func (c *brokerConn) encode(buf *bytes.Buffer, req *produce.Request) error {
	buf.Reset()
	return protocol.WriteRequest(buf, c.version, 0, c.clientID, req)
}

// send writes an encoded request and returns its call; the answer (or the
// connection's death) closes call.done. The write itself is bounded by
// timeout; so is the wait, by whoever waits (expire).
func (c *brokerConn) send(encoded []byte, timeout time.Duration) *call {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return failed(err)
	}
	c.nextID++
	cl := &call{id: c.nextID, timeout: timeout, deadline: time.Now().Add(timeout), done: make(chan struct{})}
	c.pending = append(c.pending, cl)
	c.mu.Unlock()

	// The request header is size, api key, api version, correlation id.
	binary.BigEndian.PutUint32(encoded[8:12], uint32(cl.id))
	_ = c.nc.SetWriteDeadline(cl.deadline)
	if _, err := c.nc.Write(encoded); err != nil {
		c.fail(fmt.Errorf("write to %s: %w", c.addr, err))
	}
	return cl
}

// failed is a call that never went out.
func failed(err error) *call {
	cl := &call{err: err, done: make(chan struct{})}
	close(cl.done)
	return cl
}

// readLoop hands each answer to the oldest waiting call until the
// connection dies.
func (c *brokerConn) readLoop() {
	for {
		id, msg, err := protocol.ReadResponse(c.br, protocol.Produce, c.version)
		if err != nil {
			c.fail(fmt.Errorf("read from %s: %w", c.addr, err))
			return
		}
		c.mu.Lock()
		if len(c.pending) == 0 || c.pending[0].id != id {
			c.mu.Unlock()
			c.fail(fmt.Errorf("read from %s: answer %d matches no request waiting", c.addr, id))
			return
		}
		cl := c.pending[0]
		c.pending[0] = nil
		c.pending = c.pending[1:]
		c.mu.Unlock()
		cl.res, _ = msg.(*produce.Response)
		close(cl.done)
	}
}

// fail kills the connection (once) and fails every call still waiting.
func (c *brokerConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	close(c.dead)
	c.mu.Unlock()
	c.nc.Close()
	for _, cl := range pending {
		cl.err = err
		close(cl.done)
	}
}

// alive reports whether the connection can take requests.
func (c *brokerConn) alive() bool {
	select {
	case <-c.dead:
		return false
	default:
		return true
	}
}
