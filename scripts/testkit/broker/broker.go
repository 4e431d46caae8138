// Package broker runs the MQTT brokers of tests, benchmarks, the e2e
// harness and the demo: an embedded mochi-mqtt server (plain and TLS
// listeners, optional user ledger and refused subscriptions, restartable on
// the same ports) and a mosquitto runner from Debian's package. It also has
// the two MQTT clients tests need: a Publisher that publishes QoS 1 as the
// agent does, and a Counter fed by a subscriber that counts every reading by
// (device_id, seq).
//
//	b := broker.New(t, broker.Options{TLS: certs.Server, Users: map[string]string{"pi-1": "pw"}})
//	url := b.TLSURL() // ssl://127.0.0.1:port; b.URL() is the plain listener
//	b.Stop(); b.Start() // a broker restart on the same ports
package broker

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Options configures an embedded broker. Zero values are sensible.
type Options struct {
	// TLS, when set, adds a TLS listener (TLSAddr) next to the plain one.
	TLS *tls.Config
	// Users maps usernames to passwords; nil lets anyone in.
	Users map[string]string
	// DenySubscribe lists users whose SUBSCRIBEs are refused (SUBACK 0x80),
	// as a HiveMQ Cloud credential without subscribe permission is.
	DenySubscribe []string
	// Inline, when set, receives every message on Filter from inside the
	// broker; it is subscribed before the listeners open, so nothing
	// published to a fresh broker is missed (a paho subscriber could be
	// late after a restart).
	Inline func(topic string, payload []byte)
	Filter string // default "#"
	// MaxInflight caps the QoS 1 messages mochi keeps per client session,
	// including the backlog queued for a disconnected persistent session
	// (mochi's capabilities.maximum_inflight; 0 = 20000).
	MaxInflight uint16
	// MaxPacketSize is the largest packet accepted (0 = 2 MiB).
	MaxPacketSize uint32
	// Logger receives mochi's own log; nil discards it.
	Logger *slog.Logger
}

// Broker is an embedded mochi-mqtt server on 127.0.0.1 that keeps its
// ports across Stop and Start.
type Broker struct {
	o       Options
	Addr    string // host:port of the plain TCP listener
	TLSAddr string // host:port of the TLS listener, if any

	mu  sync.Mutex
	srv *mochi.Server
}

// New starts a broker on free loopback ports; it stops when the test ends.
func New(tb testing.TB, o Options) *Broker {
	tb.Helper()
	b, err := Start(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Stop)
	return b
}

// Start starts a broker on free loopback ports, for programs; Stop it.
func Start(o Options) (*Broker, error) {
	if o.Filter == "" {
		o.Filter = "#"
	}
	b := &Broker{o: o, Addr: "127.0.0.1:0"}
	if o.TLS != nil {
		b.TLSAddr = "127.0.0.1:0"
	}
	return b, b.Start()
}

// URL is the plain tcp:// URL.
func (b *Broker) URL() string { return "tcp://" + b.Addr }

// TLSURL is the ssl:// URL of the TLS listener.
func (b *Broker) TLSURL() string { return "ssl://" + b.TLSAddr }

// Start (re)starts the broker on its ports. A restarted broker has no
// sessions or retained messages: it is a new process.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return nil
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumInflight = b.o.MaxInflight
	if caps.MaximumInflight == 0 {
		caps.MaximumInflight = 20000
	}
	caps.MaximumPacketSize = b.o.MaxPacketSize
	if caps.MaximumPacketSize == 0 {
		caps.MaximumPacketSize = 2 << 20
	}
	caps.MaximumClientWritesPending = 16 << 10
	logger := b.o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv := mochi.New(&mochi.Options{Capabilities: caps, InlineClient: b.o.Inline != nil, Logger: logger})
	if err := b.addAuth(srv); err != nil {
		return err
	}
	if b.o.Inline != nil {
		fn := b.o.Inline
		if err := srv.Subscribe(b.o.Filter, 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
			fn(pk.TopicName, pk.Payload)
		}); err != nil {
			return err
		}
	}
	plain := newTCPListener("tcp", b.Addr, nil)
	if err := srv.AddListener(plain); err != nil {
		return fmt.Errorf("mqtt listener %s: %w", b.Addr, err)
	}
	b.Addr = plain.Address()
	if b.TLSAddr != "" {
		secure := newTCPListener("tls", b.TLSAddr, b.o.TLS)
		if err := srv.AddListener(secure); err != nil {
			srv.Close()
			return fmt.Errorf("mqtt TLS listener %s: %w", b.TLSAddr, err)
		}
		b.TLSAddr = secure.Address()
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return err
	}
	b.srv = srv
	return nil
}

func (b *Broker) addAuth(srv *mochi.Server) error {
	if b.o.Users == nil {
		return srv.AddHook(new(auth.AllowHook), nil)
	}
	ledger := &auth.Ledger{}
	for u, p := range b.o.Users {
		ledger.Auth = append(ledger.Auth, auth.AuthRule{Username: auth.RString(u), Password: auth.RString(p), Allow: true})
	}
	ledger.Auth = append(ledger.Auth, auth.AuthRule{Remote: "*", Allow: false})
	for _, u := range b.o.DenySubscribe {
		ledger.ACL = append(ledger.ACL, auth.ACLRule{Username: auth.RString(u), Filters: auth.Filters{"#": auth.Deny}})
	}
	return srv.AddHook(new(auth.Hook), &auth.Options{Ledger: ledger})
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
