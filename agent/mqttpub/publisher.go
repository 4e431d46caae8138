package mqttpub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/metricset"
	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/buffer/tlsconf"
)

// Queue is what the publisher needs from the buffer.
type Queue interface {
	// Peek returns up to n oldest records with Seq > after, oldest first.
	Peek(after uint64, n int) ([]buffer.Record, error)
	// Delete removes acknowledged records.
	Delete(ctx context.Context, seqs ...uint64) error
	// Wait blocks until a record with Seq > after exists.
	Wait(ctx context.Context, after uint64) error
}

// Secret is what the publisher needs of a password: its value, to send it
// in CONNECT. secret.Secret (buffer/secret), which never prints, is one.
type Secret interface{ Reveal() string }

// Options configures a Publisher. Zero values mean the defaults noted.
type Options struct {
	URL         string      // ssl://host:8883, tls://, mqtts://, tcp://, mqtt://
	ClientID    string      // fixed, for the broker's persistent session; default DeviceID
	Username    string      // empty: no credentials
	Password    Secret      // nil: none; never logged
	CAFile      string      // PEM bundle; empty: system roots
	TLS         *tls.Config // overrides CAFile (tests); MinVersion is raised to 1.2
	DeviceID    string      // topic level and status topic
	TopicPrefix string      // default "sensors"

	KeepAlive      time.Duration // default 30s
	PingTimeout    time.Duration // default 10s
	ConnectTimeout time.Duration // default 15s
	// AckTimeout drops a connection whose oldest publish has waited this
	// long for its PUBACK. Default 2*KeepAlive+PingTimeout.
	AckTimeout time.Duration
	// WriteTimeout bounds each socket write, so a black-holed link
	// fails the connection instead of blocking. Default KeepAlive+PingTimeout.
	WriteTimeout time.Duration
	MinBackoff   time.Duration // first reconnect delay, default 1s
	MaxBackoff   time.Duration // cap of the exponential backoff, default 30s
	// FlushTimeout is how long Run waits for PUBACKs of in-flight
	// publishes after ctx is cancelled. Default 1.5s.
	FlushTimeout time.Duration
	// StallTimeout is how long the publisher may go without a step forward
	// (a publish, a PUBACK handled, a delete done) while it has work before
	// Stalled reports it. Default 2*AckTimeout.
	StallTimeout time.Duration

	Window int // in-flight QoS 1 publishes, default 2000 (at most 65535)
	Batch  int // records per Peek, default 500

	// Delivery says when a reading is deleted from the queue:
	// DeliveryBroker (the zero value) at its PUBACK, DeliveryKafka when a
	// forwarder confirms it on the device's ack topic.
	Delivery Delivery
	// ConfirmTimeout (kafka) is how long a PUBACKed reading waits for its
	// confirmation before it is sent again. Default 60s; the interval
	// between re-send rounds doubles, up to MaxResendInterval, while
	// nothing at all is confirmed.
	ConfirmTimeout time.Duration
	// MaxResendInterval caps that backoff. Default 10m (at least
	// ConfirmTimeout).
	MaxResendInterval time.Duration
	// MaxUnconfirmed (kafka) caps the readings published and not yet
	// confirmed (and deleted); at the cap nothing new is published and
	// readings wait in the queue. Default 10,000.
	MaxUnconfirmed int
	// PriorSeq is the highest seq an earlier run may have published (the
	// queue's last seq at start). A confirmation for a seq above both it
	// and everything this run published is counted as bad.
	PriorSeq uint64
	// ConfirmKeys (kafka) are the forwarders' public keys. With them, only
	// confirmations signed for this device by one of them delete readings;
	// nil accepts unsigned ones (and the default status says so).
	ConfirmKeys *sign.Verifier
	// Status supplies the retained status message (the heartbeat,
	// buffer/heartbeat) and says when it is due again; the agent passes
	// agent/status's Reporter. Nil: a heartbeat with the delivery mode
	// and the unconfirmed count, every StatusInterval.
	Status StatusSource
	// StatusInterval is how often the default Status is published.
	// Default 1m.
	StatusInterval time.Duration

	// Subscriptions are further topics the publisher subscribes to, QoS
	// 1, on every connect: the fleet's config and command topics. A
	// subscription the broker refuses is logged, never fatal: readings
	// flow without it.
	Subscriptions []Subscription

	Logger  *slog.Logger // nil: discard
	Metrics Metrics
}

// Delivery is when the publisher deletes a reading from its queue.
type Delivery string

const (
	// DeliveryBroker deletes a reading at the broker's PUBACK: from then on
	// the broker's queue holds the only copy.
	DeliveryBroker Delivery = "broker"
	// DeliveryKafka keeps a reading until a forwarder confirms that Kafka
	// has it (buffer/confirm, on {prefix}/{device_id}/ack).
	DeliveryKafka Delivery = "kafka"
)

// Metrics are updated by the publisher; nil fields are not updated.
type Metrics struct {
	Published     *vm.Counter             // readings acknowledged by the broker (PUBACK)
	Delivered     *vm.Counter             // readings deleted from the queue after delivery
	DeleteErrors  *vm.Counter             // failed deletes (each ends the session)
	Latency       *vm.PrometheusHistogram // seconds from publish to PUBACK
	Connected     *vm.Gauge               // 1 while connected
	ConnectErrors *vm.Counter             // failed connection attempts
	Disconnects   *vm.Counter             // connections lost

	Confirmed      *vm.Counter             // kafka: readings confirmed by a forwarder
	ConfirmLatency *vm.PrometheusHistogram // kafka: seconds from first publish to confirmation
	Resent         *vm.Counter             // kafka: readings sent again for want of a confirmation
	// BadConfirms counts ignored confirmation messages by the label
	// "reason": "malformed" (does not decode), "unsigned" or
	// "bad_signature" (with ConfirmKeys: no signature, or none that
	// verifies for this device; nothing is deleted), or "unsent" (confirms
	// seqs this device never sent).
	BadConfirms *metricset.CounterVec
}

// Publisher drains a Queue to MQTT. Create it with New and call Run once.
type Publisher struct {
	o         Options
	q         Queue
	tls       *tls.Config
	log       *slog.Logger
	connected atomic.Bool
	statusTop string
	topics    map[string]string // sensor -> reading topic; used by the sender only

	led      *ledger
	prog     progress
	delFails atomic.Int64 // failed deletes since the last good one
	ackTop   string       // kafka: where confirmations arrive
	badLog   rateLimit    // for bad confirmations

	sessMu     sync.Mutex
	sessCancel context.CancelCauseFunc // ends the current session; nil between sessions
	sessClient mqtt.Client             // the current session's client, for Publish; nil between sessions
}

// New checks opts and returns a Publisher. It does not connect.
func New(q Queue, o Options) (*Publisher, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: url %q is not like ssl://host:8883", ErrOptions, o.URL)
	}
	if o.DeviceID == "" {
		return nil, fmt.Errorf("%w: device id is empty", ErrOptions)
	}
	setDefaults(&o)
	if o.Window > 65535 {
		return nil, fmt.Errorf("%w: window %d exceeds MQTT's 65535 packet ids", ErrOptions, o.Window)
	}
	if o.Delivery != DeliveryBroker && o.Delivery != DeliveryKafka {
		return nil, fmt.Errorf("%w: delivery %q is not %q or %q", ErrOptions, o.Delivery, DeliveryKafka, DeliveryBroker)
	}
	p := &Publisher{o: o, q: q, log: o.Logger, topics: map[string]string{}}
	lo := ledgerOptions{
		kafka: o.Delivery == DeliveryKafka, maxUnconfirmed: o.MaxUnconfirmed,
		confirmTimeout: o.ConfirmTimeout, maxInterval: o.MaxResendInterval,
		priorSeq: o.PriorSeq,
	}
	if h := o.Metrics.ConfirmLatency; h != nil { // not a nil pointer in a non-nil interface
		lo.latency = h
	}
	p.led = newLedger(lo)
	p.statusTop = heartbeat.Topic(o.TopicPrefix, o.DeviceID)
	if p.o.Status == nil {
		p.o.Status = &defaultStatus{p: p}
	}
	p.ackTop = confirm.Topic(o.TopicPrefix, o.DeviceID)
	useTLS, err := mqttconn.TLS(u.Scheme)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	if useTLS {
		if p.tls, err = tlsConfig(o); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func setDefaults(o *Options) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.ClientID == "" {
		o.ClientID = o.DeviceID
	}
	if o.TopicPrefix == "" {
		o.TopicPrefix = "sensors"
	}
	def(&o.KeepAlive, 30*time.Second)
	def(&o.PingTimeout, 10*time.Second)
	def(&o.ConnectTimeout, 15*time.Second)
	def(&o.AckTimeout, 2*o.KeepAlive+o.PingTimeout)
	def(&o.WriteTimeout, o.KeepAlive+o.PingTimeout)
	def(&o.MinBackoff, time.Second)
	def(&o.MaxBackoff, 30*time.Second)
	def(&o.FlushTimeout, 1500*time.Millisecond)
	def(&o.StallTimeout, 2*o.AckTimeout)
	if o.Window <= 0 {
		o.Window = 2000
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.Delivery == "" {
		o.Delivery = DeliveryBroker
	}
	def(&o.ConfirmTimeout, time.Minute)
	def(&o.MaxResendInterval, 10*time.Minute)
	if o.MaxUnconfirmed <= 0 {
		o.MaxUnconfirmed = 10000
	}
	def(&o.StatusInterval, time.Minute)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func tlsConfig(o Options) (*tls.Config, error) {
	if o.TLS != nil {
		c := o.TLS.Clone()
		if c.MinVersion < tls.VersionTLS12 {
			c.MinVersion = tls.VersionTLS12
		}
		return c, nil
	}
	c, err := tlsconf.Client(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	return c, nil
}

// Connected reports whether the publisher has a broker connection now.
func (p *Publisher) Connected() bool { return p.connected.Load() }

// StatusTopic is the retained online/offline topic of this device.
func (p *Publisher) StatusTopic() string { return p.statusTop }

// DeliveryStats is the publisher's view of its queue.
type DeliveryStats struct {
	Mode Delivery
	// Unconfirmed (kafka) counts readings published and not yet confirmed,
	// in flight included.
	Unconfirmed int
	// Deleting counts delivered readings whose delete has not finished.
	Deleting int
	// OldestUnconfirmed is when this run first published the oldest
	// unconfirmed reading; zero when there is none.
	OldestUnconfirmed time.Time
	// LastConfirm is when a confirmation last deleted something; zero if
	// none has in this run.
	LastConfirm time.Time
}

// Delivery returns a snapshot of what is unconfirmed and being deleted.
func (p *Publisher) Delivery() DeliveryStats {
	st := p.led.stats()
	return DeliveryStats{Mode: p.o.Delivery, Unconfirmed: st.unconfirmed, Deleting: st.deleting,
		OldestUnconfirmed: st.oldest, LastConfirm: st.lastConfirm}
}

// Run connects, drains the queue and reconnects until ctx is cancelled. It
// then waits briefly for in-flight PUBACKs, deletes what was delivered,
// marks the device offline and disconnects. It returns nil after a clean
// stop, or the queue's error when the buffer fails for good (closed,
// unreadable).
func (p *Publisher) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	delErr := make(chan error, 1)
	go func() {
		err := p.deleter(stop)
		if err != nil {
			cancel(err)
		}
		delErr <- err
	}()
	err := p.sessions(ctx)
	close(stop)
	if derr := <-delErr; derr != nil {
		return derr
	}
	return err
}

// sessions is Run's connect loop.
func (p *Publisher) sessions(ctx context.Context) error {
	attempt := 0
	for ctx.Err() == nil {
		s, err := p.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			delay := p.backoff(attempt)
			attempt++
			p.logConnectError(err, attempt, delay)
			inc(p.o.Metrics.ConnectErrors)
			sleep(ctx, delay)
			continue
		}
		attempt = 0
		p.setConnected(true)
		p.log.Info("mqtt connected", "url", p.o.URL, "client_id", p.o.ClientID)
		err = s.run(ctx)
		p.setConnected(false)
		if errors.Is(err, errQueue) {
			s.close(false)
			return err
		}
		if ctx.Err() != nil {
			s.close(!s.dead)
			return nil
		}
		s.close(false)
		if errors.Is(err, ErrDelete) {
			// Logged by the deleter; back off while the disk keeps failing.
			sleep(ctx, p.backoff(int(p.delFails.Load())))
			continue
		}
		inc(p.o.Metrics.Disconnects)
		delay := p.backoff(0)
		p.log.Warn("mqtt connection lost; readings stay buffered", "err", err, "retry_in", delay.Round(time.Millisecond).String())
		sleep(ctx, delay)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// endSession ends the current session, if any, with cause.
func (p *Publisher) endSession(cause error) {
	p.sessMu.Lock()
	defer p.sessMu.Unlock()
	if p.sessCancel != nil {
		p.sessCancel(cause)
	}
}

// Stalled returns an error wrapping ErrStalled when the publisher has work
// but has made no step forward for StallTimeout: readings to send or
// publishes in flight while connected, or delivered readings whose delete
// does not return. A network outage is not a stall (there is no
// connection); an idle publisher is not either. The agent's readiness and
// its systemd watchdog use it.
func (p *Publisher) Stalled() error {
	idle := p.prog.idleFor()
	if idle < p.o.StallTimeout {
		return nil
	}
	d := idle.Round(time.Second).String()
	if n := p.led.deletingN(); n > 0 {
		return fmt.Errorf("%w: %d delivered readings not deleted from the buffer for %s", ErrStalled, n, d)
	}
	if !p.connected.Load() {
		return nil
	}
	if n := p.prog.inflight.Load(); n > 0 {
		return fmt.Errorf("%w: %d publishes in flight and no PUBACK handled for %s", ErrStalled, n, d)
	}
	if p.prog.sending.Load() {
		return fmt.Errorf("%w: readings to send and none sent for %s", ErrStalled, d)
	}
	return nil
}

// progress tells a publisher that works from one that is stuck.
type progress struct {
	last     atomic.Int64 // unix ns of the last step forward
	sending  atomic.Bool  // the sender is not waiting for new readings
	inflight atomic.Int64 // publishes whose PUBACK the acker has not handled
}

func (g *progress) touch() { g.last.Store(time.Now().UnixNano()) }

func (g *progress) idleFor() time.Duration {
	return time.Duration(time.Now().UnixNano() - g.last.Load())
}

// setSending marks the sender busy or waiting; becoming busy counts as a
// step, so the clock starts then.
func (g *progress) setSending(v bool) {
	if v {
		g.touch()
	}
	g.sending.Store(v)
}

func (p *Publisher) setConnected(v bool) {
	p.connected.Store(v)
	if g := p.o.Metrics.Connected; g != nil {
		if v {
			g.Set(1)
		} else {
			g.Set(0)
		}
	}
}

// backoff is min*2^attempt capped at max, with "equal jitter": a random
// value in [d/2, d), so many devices behind one outage do not reconnect
// in lockstep.
func (p *Publisher) backoff(attempt int) time.Duration {
	d := p.o.MinBackoff
	for i := 0; i < attempt && d < p.o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.o.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

func (p *Publisher) logConnectError(err error, attempt int, delay time.Duration) {
	hint := ""
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr *tls.CertificateVerificationError
	switch {
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword), errors.Is(err, packets.ErrorRefusedNotAuthorised):
		hint = "the broker refused the credentials: check mqtt.username and the password (mqtt.password_file or its environment variable), " +
			"and that mqtt.client_id (default device_id) equals mqtt.username, which the shipped broker set-ups require"
	case errors.As(err, &uerr), errors.As(err, &cerr):
		hint = "the broker's certificate is not trusted: check mqtt.ca_file (empty means system roots)"
	case errors.As(err, &herr):
		hint = "the broker's certificate does not match the host name in mqtt.url"
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		hint = "the broker rejected the client id: check mqtt.client_id"
	case errors.Is(err, ErrSubscribeRefused):
		hint = "allow this device to subscribe to its ack topic " + p.ackTop + " (delivery: kafka needs it), or set mqtt.delivery: broker"
	default:
		var nerr net.Error
		var operr *net.OpError
		if errors.As(err, &nerr) || errors.As(err, &operr) {
			hint = "cannot reach the broker: check mqtt.url and the network"
		}
	}
	lvl := slog.LevelWarn
	if attempt > 1 && attempt%10 != 0 {
		lvl = slog.LevelDebug // the first failure and every tenth say it loudly
	}
	p.log.Log(context.Background(), lvl, "mqtt connect failed; readings stay buffered",
		"url", p.o.URL, "err", err, "hint", hint, "attempt", attempt, "retry_in", delay.Round(time.Millisecond).String())
}

func inc(c *vm.Counter) {
	if c != nil {
		c.Inc()
	}
}

func add(c *vm.Counter, n int) {
	if c != nil {
		c.Add(n)
	}
}

// session is one broker connection.
type session struct {
	ctx  context.Context // ends a dial or TLS handshake in progress on shutdown
	p    *Publisher
	c    mqtt.Client
	lost chan error
	mu   sync.Mutex
	conn *mqttconn.Conn // what paho reads and writes; Abort breaks a stalled link
	dead bool           // PUBACKs stopped during the shutdown flush
}

func (p *Publisher) connect(ctx context.Context) (*session, error) {
	s := &session{ctx: ctx, p: p, lost: make(chan error, 1)}
	o := mqtt.NewClientOptions().
		AddBroker(p.o.URL).
		SetClientID(p.o.ClientID).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetCleanSession(false).
		SetOrderMatters(false).
		SetStore(mqtt.NewMemoryStore()).
		SetKeepAlive(p.o.KeepAlive).
		SetPingTimeout(p.o.PingTimeout).
		SetConnectTimeout(p.o.ConnectTimeout).
		SetWriteTimeout(p.o.WriteTimeout).
		SetAutoReconnect(false). // Run reconnects, re-sending from the buffer
		SetConnectRetry(false).
		SetWill(p.statusTop, string(p.o.Status.Will()), 1, true).
		SetCustomOpenConnectionFn(s.dial).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case s.lost <- err:
			default:
			}
		})
	if p.o.Username != "" {
		o.SetUsername(p.o.Username)
		if p.o.Password != nil {
			o.SetPassword(p.o.Password.Reveal())
		}
	}
	// Confirmations (and fleet messages) the persistent session queued
	// arrive right after CONNACK, before the subscriptions are renewed.
	o.SetDefaultPublishHandler(s.route)
	s.c = mqtt.NewClient(o)
	tok := s.c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		s.closeConn()
		<-tok.Done()
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		s.closeConn()
		return nil, err
	}
	if p.o.Delivery == DeliveryKafka {
		if err := s.subscribe(ctx); err != nil {
			s.close(false)
			return nil, err
		}
	}
	if err := s.subscribeExtra(ctx); err != nil {
		s.close(false)
		return nil, err
	}
	return s, nil
}

// dial opens the TCP (and TLS) connection for paho (buffered reads,
// coalesced writes, a deadline on every socket write; see buffer/mqttconn)
// and keeps it, so a stalled link can be closed from outside.
func (s *session) dial(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	p := s.p
	c, err := mqttconn.Dial(s.ctx, u, mqttconn.Options{TLS: p.tls, ConnectTimeout: p.o.ConnectTimeout,
		KeepAlive: p.o.KeepAlive, WriteTimeout: p.o.WriteTimeout})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	return c, nil
}

func (s *session) closeConn() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Abort()
		s.conn.Close()
	}
}

// close ends the session: when clean, the device is marked offline first
// (a clean DISCONNECT suppresses the will).
func (s *session) close(clean bool) {
	if clean && s.c.IsConnectionOpen() {
		tok := s.c.Publish(s.p.statusTop, 1, true, s.p.o.Status.Status(heartbeat.Offline))
		tok.WaitTimeout(500 * time.Millisecond)
		s.c.Disconnect(250)
	} else if s.c.IsConnectionOpen() {
		s.c.Disconnect(0)
	}
	s.closeConn()
}
