package forwarder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/semaphore"

	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
	"github.com/edgepipe/sensorpipe/buffer/tlsconf"
	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/cloud/statushttp"
)

// Options are the parts of a Forwarder that do not come from configuration.
type Options struct {
	Logger  *slog.Logger // nil = discard
	Version string       // shown in the startup log line
	// Listening, if set, is called with the bound address of the HTTP server
	// (useful with FORWARDER_LISTEN=127.0.0.1:0).
	Listening func(addr string)
}

// Forwarder is one MQTT-to-Kafka bridge. Create it with New and call Run once.
type Forwarder struct {
	cfg  *config.Config
	log  *slog.Logger
	opts Options
	m    *metrics

	cl    *kgo.Client // the producer
	probe *prober     // finds the record at fault in a batch Kafka refused
	hold  holdQueue   // records waiting out a cluster error's backoff
	conf  *confirmer

	sem      chan struct{}       // one token per message in flight
	bytesSem *semaphore.Weighted // payload bytes in flight
	acks     chan *pending       // in-order PUBACKs for the acker
	idle     chan struct{}       // cap 1: the acker freed the last in-flight slot
	queue    ackQueue            // arrival order
	handleMu sync.Mutex          // held while the handler admits a message; shutdown takes it to fence them

	// The stop signal is Run's context: once it is done the handler admits
	// nothing and shutdown begins. work ends the goroutines once the flush
	// is over. Both are set by Run before anything can read them.
	stop context.Context
	work context.Context

	// Every goroutine the forwarder starts is spawned into wg, and Run
	// returns only after wg.Wait; ended refuses spawns once it waits.
	wg      sync.WaitGroup
	spawnMu sync.Mutex
	ended   bool
	conn    atomic.Pointer[mqttconn.Conn] // the MQTT connection paho uses, closed by shutdown

	mqttUp     atomic.Bool
	subscribed atomic.Bool // the broker granted our SUBSCRIBE on this connection
	kafkaUp    atomic.Bool
	// statusMissing: Kafka said the status topic does not exist, so
	// heartbeats are acked without being relayed (checkStatusTopic).
	statusMissing atomic.Bool
	closing       atomic.Bool  // the producers are being closed: their failures are abandonments
	failures      atomic.Int64 // consecutive failed Kafka writes, for backoff
	lastErrLg     atomic.Int64 // unix nanos of the last produce-error log line (rate limit)
	lastDLQLog    atomic.Int64 // unix nanos of the last DLQ-refusal log line (rate limit)
	idHeader      []byte
}

// New checks what can be checked without the network and returns a Forwarder.
func New(cfg *config.Config, opts Options) (*Forwarder, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{
		cfg:      cfg,
		log:      opts.Logger,
		opts:     opts,
		sem:      make(chan struct{}, cfg.MaxInFlight),
		acks:     make(chan *pending, cfg.MaxInFlight),
		idle:     make(chan struct{}, 1),
		idHeader: []byte(cfg.ID),
		bytesSem: semaphore.NewWeighted(int64(cfg.MaxInFlightBytes)),
	}
	f.queue.out = f.acks
	f.m = newMetrics(func() float64 { return float64(len(f.sem)) }, f.queue.oldestAge)
	f.conf = newConfirmer(cfg.ID, cfg.ConfirmKey, cfg.ConfirmInterval, f.log, f.m)
	f.m.reg.Gauge("forwarder_confirm_pending_devices",
		"Devices with readings Kafka acknowledged and not yet confirmed to them.", f.conf.pendingDevices)
	id := "cloud-forwarder-" + cfg.ID
	kopts, err := producerOpts(cfg, id, kafkaHooks{f})
	if err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	if f.cl, err = kgo.NewClient(kopts...); err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	// The prober's client sends one record at a time, so it needs no linger.
	popts, err := producerOpts(cfg, id+"-probe", kafkaHooks{f})
	if err == nil {
		f.probe = &prober{f: f, parts: map[partitionKey][]suspect{}}
		f.probe.cl, err = kgo.NewClient(append(popts, kgo.ProducerLinger(0))...)
	}
	if err != nil {
		f.cl.Close()
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	return f, nil
}

// Ready reports whether the forwarder is connected to both sides and taking messages.
func (f *Forwarder) Ready() bool {
	if f.stopped() {
		return false
	}
	return f.mqttUp.Load() && f.subscribed.Load() && f.kafkaReady()
}

// kafkaReady: Kafka answered (the probe, or the last write), and no message
// has waited for it longer than stallAfter (records held for a cluster
// reason, a DLQ that refuses dead letters, a topic that does not exist).
func (f *Forwarder) kafkaReady() bool {
	return f.kafkaUp.Load() && f.queue.oldestAge() < stallAfter.Seconds()
}

// stopped reports whether the stop signal came (or Run has not started).
func (f *Forwarder) stopped() bool {
	f.spawnMu.Lock()
	stop := f.stop
	f.spawnMu.Unlock()
	return stop == nil || stop.Err() != nil
}

// spawn runs fn in a goroutine Run waits for; false (fn not run) once Run
// is waiting for the last ones.
func (f *Forwarder) spawn(fn func()) bool {
	f.spawnMu.Lock()
	defer f.spawnMu.Unlock()
	if f.ended {
		return false
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
	return true
}

// waitAll refuses new goroutines and waits for every one spawned.
func (f *Forwarder) waitAll() {
	f.spawnMu.Lock()
	f.ended = true
	f.spawnMu.Unlock()
	f.wg.Wait()
}

// subscribe retries until the broker grants every subscription (the
// readings' filter, and the heartbeats' when they are relayed). paho
// reports a refusal (SUBACK 0x80, e.g. an ACL that forbids the filter)
// only in the token's Result, not as an error, and a forwarder that
// silently receives nothing must not report ready.
func (f *Forwarder) subscribe(ctx context.Context, c mqtt.Client) {
	filters := f.subscriptions()
	subs := make(map[string]byte, len(filters))
	for _, filter := range filters {
		subs[filter] = 1
	}
	for delay := time.Second; c.IsConnectionOpen(); delay = min(2*delay, 30*time.Second) {
		// nil callback: messages go to the default handler, which also matches $share filters.
		t := c.SubscribeMultiple(subs, nil)
		var err error
		switch {
		case !t.WaitTimeout(10 * time.Second):
			err = errors.New("no SUBACK within 10s")
		case t.Error() != nil:
			err = t.Error()
		default:
			for _, filter := range filters {
				if subackCode(t.(*mqtt.SubscribeToken), filter) >= 0x80 {
					err = fmt.Errorf("the broker refused the subscription to %s (SUBACK 0x80): check the user's subscribe permission", filter)
					break
				}
			}
		}
		if err == nil {
			f.subscribed.Store(true)
			f.log.Info("mqtt subscribed", "filters", filters)
			return
		}
		f.log.Error("mqtt subscribe failed; retrying", "filters", filters, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// Handler serves /metrics, /healthz and /readyz.
func (f *Forwarder) Handler() http.Handler {
	return statushttp.Handler(f.m.reg, f.cfg.Pprof, func() (bool, string) {
		return f.Ready(), fmt.Sprintf("mqtt_connected=%t mqtt_subscribed=%t kafka_ready=%t", f.mqttUp.Load(), f.subscribed.Load(), f.kafkaReady())
	})
}

// Run forwards until ctx is cancelled, then shuts down gracefully: it
// stops taking messages, waits (up to Config.ShutdownTimeout) until every
// one in flight is acked, confirms what Kafka has, disconnects, and returns
// only when every goroutine it started has ended.
func (f *Forwarder) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", f.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", f.cfg.Listen, err)
	}
	if f.opts.Listening != nil {
		f.opts.Listening(ln.Addr().String())
	}
	srv := &http.Server{Handler: f.Handler(), ReadHeaderTimeout: 5 * time.Second}
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	f.spawnMu.Lock()
	f.stop, f.work = ctx, work
	f.spawnMu.Unlock()

	httpErr := make(chan error, 1)
	f.spawn(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			httpErr <- fmt.Errorf("http: %w", err)
		}
	})
	f.spawn(func() { f.ackLoop(work) })
	f.spawn(func() { f.probeLoop(work) })
	end := func() error {
		stopWork()
		shutCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shutCtx)
		// Abandons what Kafka did not take: not acked, the broker
		// delivers it again to the next session.
		f.closing.Store(true)
		f.cl.Close()
		f.probe.cl.Close()
		f.waitAll()
		select {
		case err := <-httpErr:
			return err
		default:
			return nil
		}
	}

	client, err := f.connect(work)
	if err != nil {
		_ = end()
		return err
	}
	confCtx, stopConf := context.WithCancel(work)
	confDone := make(chan struct{})
	f.spawn(func() {
		defer close(confDone)
		f.conf.run(confCtx, client, f.mqttUp.Load)
	})
	f.log.Info("forwarder started", "version", f.opts.Version, "id", f.cfg.ID, "id_from", f.cfg.IDFrom, "mqtt", f.cfg.MQTT.URL,
		"filters", f.subscriptions(), "kafka", f.cfg.Kafka.Bootstrap, "topic", f.cfg.Kafka.Topic,
		"security_protocol", f.cfg.Kafka.SecurityProtocol, "listen", ln.Addr().String())
	f.logStartWarnings()

	<-ctx.Done()
	start := time.Now()
	err = f.shutdown(client, func() { stopConf(); <-confDone })
	if herr := end(); err == nil {
		err = herr
	}
	f.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond), "unacked", len(f.sem))
	return err
}

// logStartWarnings says at start what is allowed but risky in the
// configuration, where an operator reading the first lines will see it.
func (f *Forwarder) logStartWarnings() {
	if f.cfg.IDFrom != "FORWARDER_ID" {
		f.log.Warn("FORWARDER_ID is not set: using the host name as the MQTT client id. The broker keeps this forwarder's "+
			"persistent session, and the backlog queued while it is away, under that id: set FORWARDER_ID if the host name can change",
			"id", f.cfg.ID)
	}
	for _, w := range f.cfg.Warnings() {
		f.log.Warn(w)
	}
}

// shutdown runs once the stop signal came: it waits until the handler
// admits nothing more and every message in flight is acked (or
// Config.ShutdownTimeout passed), publishes the confirmations due, and
// disconnects from MQTT.
func (f *Forwarder) shutdown(client mqtt.Client, stopConfirmer func()) error {
	// Once the handler lock is free, no message can enter any more.
	f.handleMu.Lock()
	inFlight := len(f.sem)
	f.handleMu.Unlock()
	f.log.Info("shutting down: flushing in-flight records", "in_flight", inFlight)
	err := f.drain(f.cfg.ShutdownTimeout)
	// What Kafka acknowledged is confirmed now rather than left to the
	// devices' confirm timeout (they would send it all again).
	stopConfirmer()
	f.conf.final(client, f.mqttUp.Load(), 500*time.Millisecond)
	// Quiesce lets paho write the PUBACKs already queued before DISCONNECT;
	// paho returns after it whether or not the DISCONNECT went out.
	client.Disconnect(250)
	if c := f.conn.Load(); c != nil {
		_ = c.Close() // whatever paho's disconnect left open after its quiesce
	}
	f.mqttUp.Store(false)
	f.m.mqttUp.Set(0)
	return err
}

// drain waits until nothing is in flight, as the acker signals it, or for
// at most d.
func (f *Forwarder) drain(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for len(f.sem) > 0 {
		select {
		case <-f.idle: // may be stale: the loop checks again
		case <-t.C:
			return fmt.Errorf("%w: %d left (the broker redelivers them)", ErrShutdownTimeout, len(f.sem))
		}
	}
	return nil
}

// subscriptions are the filters we subscribe to, with the share group
// prefix: the readings', and the heartbeats' when they are relayed and the
// readings' filter does not cover them.
func (f *Forwarder) subscriptions() []string {
	filters := []string{f.cfg.MQTT.TopicFilter}
	if f.cfg.Kafka.StatusTopic != "" && f.cfg.MQTT.StatusFilter != "" {
		filters = append(filters, f.cfg.MQTT.StatusFilter)
	}
	if f.cfg.ShareGroup != "" {
		for i := range filters {
			filters[i] = "$share/" + f.cfg.ShareGroup + "/" + filters[i]
		}
	}
	return filters
}

// connect starts the paho client; it keeps retrying in the background until ctx ends.
func (f *Forwarder) connect(ctx context.Context) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().
		AddBroker(f.cfg.MQTT.URL).
		SetClientID(f.cfg.ID).
		SetCleanSession(false). // the broker keeps our subscription and queues messages while we are away
		SetAutoAckDisabled(true).
		SetOrderMatters(true). // handler runs in paho's router goroutine, in arrival order: ack order and backpressure
		SetAutoReconnect(true).
		SetConnectRetry(false). // firstConnect retries, so failures are logged
		SetMaxReconnectInterval(30 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(10 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetStore(newCopyingStore()).
		SetDefaultPublishHandler(f.onMessage) // also catches the backlog sent before SUBSCRIBE returns
	if f.cfg.MQTT.Username != "" {
		o.SetUsername(f.cfg.MQTT.Username)
		o.SetPassword(f.cfg.MQTT.Password.Reveal())
	}
	var tc *tls.Config
	if f.cfg.MQTT.TLS {
		var err error
		if tc, err = tlsconf.Client(f.cfg.MQTT.CAFile); err != nil {
			return nil, fmt.Errorf("mqtt tls: %w", err)
		}
	}
	o.SetCustomOpenConnectionFn(f.dialMQTT(tc))
	o.SetOnConnectHandler(func(c mqtt.Client) {
		f.mqttUp.Store(true)
		f.m.mqttUp.Set(1)
		f.conf.wake() // confirmations held while MQTT was down
		f.log.Info("mqtt connected", "broker", f.cfg.MQTT.URL)
		f.subscribed.Store(false)
		f.spawn(func() { f.subscribe(ctx, c) })
	})
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		f.subscribed.Store(false)
		f.mqttUp.Store(false)
		f.m.mqttUp.Set(0)
		f.log.Warn("mqtt connection lost; reconnecting", "err", err)
	})
	o.SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) {
		f.log.Info("mqtt reconnecting", "broker", f.cfg.MQTT.URL)
	})

	c := mqtt.NewClient(o)
	f.spawn(func() { f.firstConnect(ctx, c) })
	return c, nil
}

// firstConnect retries the initial connection with backoff, logging why each
// attempt failed (bad credentials, TLS, DNS); paho's AutoReconnect takes over
// once connected.
func (f *Forwarder) firstConnect(ctx context.Context, c mqtt.Client) {
	delay := time.Second
	for ctx.Err() == nil {
		t := c.Connect()
		select {
		case <-t.Done():
		case <-ctx.Done():
			return
		}
		if t.Error() == nil {
			return
		}
		args := []any{"broker", f.cfg.MQTT.URL, "in", delay, "err", t.Error()}
		if errors.Is(t.Error(), packets.ErrorRefusedNotAuthorised) || errors.Is(t.Error(), packets.ErrorRefusedBadUsernameOrPassword) {
			// The shipped broker set-ups bind each login to one client id.
			args = append(args, "hint", "the broker refused the login: check HIVEMQ_USERNAME and HIVEMQ_PASSWORD, "+
				"and that FORWARDER_ID (the client id) equals HIVEMQ_USERNAME")
		}
		f.log.Warn("mqtt connect failed; retrying", args...)
		if !sleep(ctx, delay) {
			return
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// subackCode is the broker's answer to the SUBSCRIBE of filter. paho's
// Subscribe files a shared subscription's under the filter without
// "$share/GROUP/", SubscribeMultiple under the whole filter; no answer at
// all counts as a refusal.
func subackCode(t *mqtt.SubscribeToken, filter string) byte {
	res := t.Result()
	if code, ok := res[filter]; ok {
		return code
	}
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if _, key, _ := strings.Cut(rest, "/"); key != "" {
			if code, ok := res[key]; ok {
				return code
			}
		}
	}
	return 0x80
}

// onMessage runs in paho's router goroutine for every PUBLISH, in order.
// Blocking here (in-flight limit reached) stops paho reading the socket,
// so the backlog stays in the broker, not in our memory.
func (f *Forwarder) onMessage(_ mqtt.Client, msg mqtt.Message) {
	select {
	case f.sem <- struct{}{}:
	case <-f.stop.Done():
		return // not acked: the broker delivers it again to our next session
	}
	weight := min(int64(len(msg.Payload())), int64(f.cfg.MaxInFlightBytes))
	if err := f.bytesSem.Acquire(f.stop, weight); err != nil {
		<-f.sem
		return
	}
	f.handleMu.Lock()
	defer f.handleMu.Unlock()
	if f.stop.Err() != nil { // shutdown holds the lock once to fence this
		f.bytesSem.Release(weight)
		<-f.sem
		return
	}
	f.m.received.Inc()
	if msg.Duplicate() {
		f.m.redelivered.Inc()
	}
	p := &pending{Context: context.Background(), ack: msg.Ack, recv: time.Now().UnixNano(), weight: weight}
	f.queue.push(p)
	if dev, ok := f.statusDevice(msg.Topic()); ok {
		if f.statusMissing.Load() {
			f.statusDropped(p)
			return
		}
		f.statusRecord(p, msg.Topic(), dev, msg.Payload(), msg.Retained())
	} else {
		f.record(p, msg.Topic(), msg.Payload())
	}
	f.produce(p)
}

// ackLoop sends PUBACKs in arrival order and frees in-flight slots until
// ctx ends, and tells shutdown (f.idle) when nothing is left in flight.
// f.acks is never closed: a late Kafka completion may still write to it.
func (f *Forwarder) ackLoop(ctx context.Context) {
	n := 0
	for {
		select {
		case p := <-f.acks:
			p.ack()
			f.bytesSem.Release(p.weight)
			<-f.sem
			n++
			if len(f.acks) == 0 || n >= 256 {
				f.m.acked.Add(n)
				n = 0
			}
			if len(f.sem) == 0 {
				select {
				case f.idle <- struct{}{}:
				default:
				}
			}
		case <-ctx.Done():
			f.m.acked.Add(n)
			return
		}
	}
}

// probeLoop asks Kafka for the topics' metadata while it is not known to
// work, so /readyz turns green before the first record and after an outage.
func (f *Forwarder) probeLoop(ctx context.Context) {
	checked := false                               // the topics' durability, once
	statusChecked := f.cfg.Kafka.StatusTopic == "" // the status topic exists (or is missing, and said so)
	for {
		if !f.kafkaUp.Load() || !checked {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			meta, err := probeTopics(pctx, f.cl, f.cfg.Kafka.Topic, f.cfg.Kafka.DLQTopic)
			if err == nil && !checked {
				checked = true
				f.checkDurability(pctx, meta)
			}
			cancel()
			if err == nil {
				f.failures.Store(0)
				f.setKafka(true)
			} else if ctx.Err() == nil {
				f.log.Warn("kafka not reachable", "bootstrap", f.cfg.Kafka.Bootstrap, "err", err)
			}
		}
		if !statusChecked || f.statusMissing.Load() {
			statusChecked = f.checkStatusTopic(ctx, !statusChecked)
		}
		if !sleep(ctx, 2*time.Second) {
			return
		}
	}
}

// checkDurability logs, once Kafka first answers, whether a confirmation
// could rest on one replica of a record: the devices delete what the
// forwarder confirms, so the topics' replication is the last copy.
func (f *Forwarder) checkDurability(ctx context.Context, meta *kmsg.MetadataResponse) {
	ds, err := topicDurability(ctx, f.cl, meta)
	if err != nil {
		f.log.Warn("could not read the topics' min.insync.replicas; check that a confirmation cannot rest on one replica", "err", err)
	}
	for _, d := range ds {
		if d.topic == f.cfg.Kafka.StatusTopic && d.cleanup != "" && !compacted(d.cleanup) {
			f.log.Warn("kafka status topic is not compacted: it keeps every heartbeat until retention deletes it, and a consumer "+
				"starting from the beginning may find no heartbeat of a quiet device; set cleanup.policy=compact",
				"topic", d.topic, "cleanup_policy", d.cleanup)
		}
		if w := d.warning(); w != "" {
			f.log.Warn("kafka durability: "+w, "topic", d.topic, "replication_factor", d.rf, "min_insync_replicas", d.minISR)
		} else {
			f.log.Info("kafka durability", "topic", d.topic, "replication_factor", d.rf, "min_insync_replicas", d.minISR)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
