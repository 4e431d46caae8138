package mqtttest

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"testing"

	mqttsrv "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// BrokerOptions configures an embedded broker.
type BrokerOptions struct {
	TLS   *tls.Config       // also listen with TLS on TLSAddr
	Users map[string]string // username -> password; nil allows anyone
	// Inline, when set, receives every message on Filter from inside the
	// broker; it is subscribed before the listeners open, so nothing
	// published to a fresh broker is missed (a paho subscriber could be
	// late after a restart).
	Inline func(topic string, payload []byte)
	Filter string // default "#"
}

// Broker is an embedded mochi-mqtt server that keeps its ports across
// Stop/Start.
type Broker struct {
	t       testing.TB
	o       BrokerOptions
	Addr    string // host:port of the plain TCP listener
	TLSAddr string // host:port of the TLS listener, if any

	mu  sync.Mutex
	srv *mqttsrv.Server
}

// StartBroker starts a broker on free loopback ports; it stops at cleanup.
func StartBroker(t testing.TB, o BrokerOptions) *Broker {
	t.Helper()
	if o.Filter == "" {
		o.Filter = "#"
	}
	b := &Broker{t: t, o: o, Addr: freeAddr(t)}
	if o.TLS != nil {
		b.TLSAddr = freeAddr(t)
	}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// URL is the plain tcp:// URL.
func (b *Broker) URL() string { return "tcp://" + b.Addr }

// TLSURL is the ssl:// URL of the TLS listener.
func (b *Broker) TLSURL() string { return "ssl://" + b.TLSAddr }

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start (re)starts the broker on its ports. A restarted broker has no
// sessions or retained messages: it is a new process.
func (b *Broker) Start() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return
	}
	srv := mqttsrv.New(&mqttsrv.Options{
		InlineClient: b.o.Inline != nil,
		Logger:       slog.New(slog.DiscardHandler),
	})
	var err error
	if b.o.Users == nil {
		err = srv.AddHook(new(auth.AllowHook), nil)
	} else {
		rules := auth.AuthRules{}
		for u, p := range b.o.Users {
			rules = append(rules, auth.AuthRule{Username: auth.RString(u), Password: auth.RString(p), Allow: true})
		}
		rules = append(rules, auth.AuthRule{Remote: "*", Allow: false})
		err = srv.AddHook(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{Auth: rules}})
	}
	if err != nil {
		b.t.Fatal(err)
	}
	if b.o.Inline != nil {
		fn := b.o.Inline
		if err := srv.Subscribe(b.o.Filter, 1, func(_ *mqttsrv.Client, _ packets.Subscription, pk packets.Packet) {
			fn(pk.TopicName, pk.Payload)
		}); err != nil {
			b.t.Fatal(err)
		}
	}
	if err := srv.AddListener(newTCPListener("tcp", b.Addr, nil)); err != nil {
		b.t.Fatal(err)
	}
	if b.TLSAddr != "" {
		if err := srv.AddListener(newTCPListener("tls", b.TLSAddr, b.o.TLS)); err != nil {
			b.t.Fatal(err)
		}
	}
	if err := srv.Serve(); err != nil {
		b.t.Fatal(err)
	}
	b.srv = srv
}

// Stop closes the listeners and every client connection.
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		_ = b.srv.Close()
		b.srv = nil
	}
}

// Retained returns the retained payload on topic, or "".
func (b *Broker) Retained(topic string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return ""
	}
	for _, pk := range b.srv.Topics.Messages(topic) {
		return string(pk.Payload)
	}
	return ""
}
