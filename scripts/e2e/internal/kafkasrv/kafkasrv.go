// Package kafkasrv runs a Kafka-protocol server (franz-go's kfake) the way
// the e2e harness needs it: TLS, SASL PLAIN, seeded topics, and a TCP proxy
// in front whose address is the one the broker advertises, so every client
// connection (bootstrap and broker) goes through the proxy and the harness
// can cut Kafka off without losing the data kfake keeps in memory.
//
//	srv, _ := kafkasrv.Start(kafkasrv.Options{TLS: tlsCfg, User: "u", Password: "p",
//		Topics: []string{"sensor-readings"}, Partitions: 3})
//	defer srv.Close()
//	srv.Proxy().SetMode(tcpproxy.Refuse) // Kafka outage
package kafkasrv

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// Options configures the server.
type Options struct {
	TLS            *tls.Config // server certificate; required
	User, Password string      // the SASL PLAIN superuser
	Topics         []string    // created at start
	Partitions     int32       // per topic; 0 = 3
}

// Server is a running kfake cluster of one broker behind a proxy.
type Server struct {
	cluster *kfake.Cluster
	proxy   *tcpproxy.Proxy
	direct  string
}

// advertised reports the proxy's address as its own, which is what kfake
// puts in metadata responses.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// Start listens on 127.0.0.1 and returns once the cluster is serving.
func Start(o Options) (*Server, error) {
	if o.TLS == nil {
		return nil, errors.New("kafkasrv: TLS config is required")
	}
	if o.Partitions == 0 {
		o.Partitions = 3
	}
	p, err := tcpproxy.Listen("127.0.0.1:0", "")
	if err != nil {
		return nil, fmt.Errorf("kafkasrv: proxy: %w", err)
	}
	proxyAddr, err := net.ResolveTCPAddr("tcp", p.Addr())
	if err != nil {
		p.Close()
		return nil, err
	}
	s := &Server{proxy: p}
	listen := func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		s.direct = ln.Addr().String()
		return advertised{Listener: ln, addr: proxyAddr}, nil
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ListenFn(listen),
		kfake.TLS(o.TLS),
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", o.User, o.Password),
		kfake.SeedTopics(o.Partitions, o.Topics...),
	)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("kafkasrv: start kfake: %w", err)
	}
	s.cluster = c
	p.SetTarget(s.direct)
	return s, nil
}

// Addr is the bootstrap address clients use (the proxy).
func (s *Server) Addr() string { return s.proxy.Addr() }

// DirectAddr is kfake's own listener, for a client that must not be cut off
// with the others (dial it in place of Addr).
func (s *Server) DirectAddr() string { return s.direct }

// Proxy is the proxy every client connection goes through.
func (s *Server) Proxy() *tcpproxy.Proxy { return s.proxy }

// Close stops the proxy and the cluster.
func (s *Server) Close() {
	s.proxy.Close()
	s.cluster.Close()
}
