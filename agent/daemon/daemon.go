package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sync/errgroup"

	// Trust a compiled-in copy of the Mozilla roots when the Pi image has
	// no CA bundle (minimal images); system roots win when present.

	"github.com/edgepipe/sensorpipe/agent/bufhttp"
	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/agent/poller"
	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/agent/status"
	"github.com/edgepipe/sensorpipe/agent/update"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers"
)

// Run is the `edge-agent run [--config FILE]` command of an agent of
// unknown version ("dev"); Command names the version.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return Command("dev")(ctx, args, stdout, stderr)
}

// Command is `edge-agent run [--config FILE]` for an agent of version
// (which the heartbeat reports).
func Command(version string) func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return func(ctx context.Context, args []string, _, stderr io.Writer) error {
		return run(ctx, args, stderr, version)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer, version string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "config file")
	if err := cmdline.ParseFlags(fs, args); err != nil {
		return err
	}
	// Before anything else: an over-the-air version newer than this binary
	// replaces this process here (agent/update's launcher).
	update.Launch(*path, version, args, stderr)
	cfg, err := config.Load(*path, os.Getenv)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	log := cmdline.NewLogger(stderr, cfg.LogFormat, level)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	err = Agent(ctx, cfg, Options{Logger: log, Reload: hup, LogLevel: level, Version: version, launched: update.Launched()})
	if err != nil {
		log.Error("edge-agent stopped", "err", err)
	}
	return err
}

// Options are the agent's seams for tests; zero values are production.
type Options struct {
	Version         string // the agent's version, for the heartbeat
	Logger          *slog.Logger
	Clock           clock.Source           // default clock.Kernel{}
	ClockOptions    []clock.Option         // tests step time
	ClockCheckEvery time.Duration          // default 5s
	Reload          <-chan os.Signal       // SIGHUP; nil: no reloads
	Getenv          func(string) string    // for reloads; default os.Getenv
	Notify          func(state string)     // default sd_notify
	MQTT            func(*mqttpub.Options) // adjust publisher options
	Listening       func(addr string)      // called with the status address
	// LogLevel is the logger's level, so a remote config changes it in
	// place; nil: a change of log_level restarts the agent.
	LogLevel *slog.LevelVar

	// Seams set by tests through export_test.go.
	appendFault   func() error                      // fails (or blocks) appends
	wrapQueue     func(mqttpub.Queue) mqttpub.Queue // the publisher's view of the buffer
	watchdogEvery time.Duration                     // instead of WATCHDOG_USEC/2
	livenessSlack time.Duration                     // poller.Liveness.Slack
	fleetChanged  func()                            // the fleet report changed
	launched      bool                              // exec'd by the launcher; default update.Launched()
}

// Agent runs the agent with a validated config until ctx ends. With
// fleet.keys_file set, the config in force is cfg layered with the remote
// documents persisted in the state directory; when a remote config or
// command needs a restart, Agent stops cleanly and returns nil, and
// systemd (Restart=always) starts the agent again.
func Agent(ctx context.Context, cfg *config.Config, o Options) error {
	a, err := newAgent(cfg, o)
	if err != nil {
		return err
	}
	if a.cfg, err = a.setupFleet(cfg); err != nil {
		return err
	}
	if err := a.setupUpdate(cfg); err != nil {
		return err
	}
	err = a.run(ctx)
	if errors.Is(err, update.ErrRestart) {
		a.log.Info("edge-agent exits to restart into the launcher; systemd starts it again", "why", err)
		return nil
	}
	if errors.Is(err, remote.ErrRestart) {
		a.log.Info("edge-agent exits to restart; systemd starts it again", "why", err)
		return nil
	}
	return err
}

type agent struct {
	store    store
	live     poller.Liveness
	health   health.Board // each sensor's health, kept across reloads
	cfg      *config.Config
	o        Options
	log      *slog.Logger
	buf      *buffer.Buffer
	clk      *clock.Clock
	m        *status.Metrics
	rep      *status.Reporter
	cfgInUse atomic.Pointer[heartbeat.Config]  // the config version in force, for the heartbeat
	startSeq uint64                            // readings with a higher seq were taken by this run
	clockErr string                            // last clock error logged, so it is logged once
	holdLog  holdLog                           // what was said about readings held for the clock
	fleet    *fleet                            // nil: remote config and commands off
	upd      *update.Updater                   // nil: over-the-air updates off
	pub      atomic.Pointer[mqttpub.Publisher] // set once created
	sensors  chan sensorsChange                // a remote config's sensors, to the pollers
}

func newAgent(cfg *config.Config, o Options) (*agent, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clock.Kernel{}
	}
	if o.ClockCheckEvery <= 0 {
		o.ClockCheckEvery = 5 * time.Second
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Notify == nil {
		o.Notify = func(state string) { _, _ = sddaemon.SdNotify(false, state) }
	}
	a := &agent{cfg: cfg, o: o, log: o.Logger, sensors: make(chan sensorsChange)}
	a.cfgInUse.Store(&heartbeat.Config{Version: cfg.Version(), Source: configSourceFile})
	return a, nil
}

func (a *agent) run(ctx context.Context) (err error) {
	cfg := a.cfg
	a.clk = clock.New(a.o.Clock, append([]clock.Option{clock.WithHold(cfg.Clock.HoldUnsynced)}, a.o.ClockOptions...)...)
	if err := a.clk.BootIDErr(); err != nil {
		a.log.Warn("no boot id: readings taken before the clock syncs cannot be corrected after a restart, nor held for it", "err", err)
	}
	a.buf, err = buffer.Open(cfg.Buffer.Path, buffer.Options{
		MaxBytes: int64(cfg.Buffer.MaxBytes), MaxAge: cfg.Buffer.MaxAge,
		WhenFull: a.whenFull(cfg.Buffer.WhenFull),
		// A failing disk makes the buffer log one line per append.
		Logger: slog.New(newLimitHandler(a.log.Handler(), logLimitEvery)).With("component", "buffer"),
		// Readings taken before the clock syncs wait (clock.hold_unsynced)
		// for their correction before the publisher sees them.
		Hold: a.clk.Held,
	})
	if err != nil {
		return fmt.Errorf("open buffer %s: %w", cfg.Buffer.Path, err)
	}
	defer func() {
		if cerr := a.buf.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close buffer: %w", cerr)
		}
	}()
	st, err := a.buf.Stats()
	if err != nil {
		return fmt.Errorf("buffer stats: %w", err)
	}
	a.startSeq = st.LastSeq
	a.m = status.NewMetrics(a.buf.Stats)
	a.store = store{buf: a.buf, fault: a.o.appendFault}
	a.checkClock(ctx)
	a.noteHold() // readings an earlier run of this boot left held

	var q mqttpub.Queue = a.buf
	if a.o.wrapQueue != nil {
		q = a.o.wrapQueue(q)
	}
	a.live.Slack = a.o.livenessSlack
	var pub *mqttpub.Publisher
	a.rep = a.reporter(func() *mqttpub.Publisher { return pub })
	pub, err = mqttpub.New(q, a.publisherOptions())
	if err != nil {
		return err
	}
	a.pub.Store(pub)
	mounts := map[string]http.Handler{}
	if a.fleet != nil {
		a.fleet.pub = pub
		mounts["GET /fleet"] = a.fleet.handler()
	}
	a.m.WatchHealth(&a.health)
	a.m.WatchDelivery(func() (int, time.Time) {
		d := pub.Delivery()
		return d.Unconfirmed, d.OldestUnconfirmed
	})
	var srv *status.Server
	if cfg.StatusListen != "" {
		srv, err = status.Listen(cfg.StatusListen, status.Options{
			Metrics: a.m.Set,
			Healthy: a.canStore,
			Ready: func() error {
				if !pub.Connected() {
					return errors.New("not connected to the MQTT broker (readings are buffered)")
				}
				return pub.Stalled()
			},
			Mounts: with(mounts, map[string]http.Handler{"/buffer/": bufhttp.Handler(a.buf, func() bufhttp.Delivery {
				d := pub.Delivery()
				return bufhttp.Delivery{Mode: string(d.Mode), SentUnconfirmed: uint64(d.Unconfirmed),
					ConfirmedDeleting: uint64(d.Deleting), OldestUnconfirmed: d.OldestUnconfirmed, LastConfirm: d.LastConfirm}
			}), "GET /sensors": health.Handler(&a.health)}),
			Logger: a.log,
		})
		if err != nil {
			return err
		}
		if a.o.Listening != nil {
			a.o.Listening(srv.Addr())
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pub.Run(gctx) })
	g.Go(func() error { return a.pollers(gctx) })
	g.Go(func() error { a.clockLoop(gctx); return nil })
	if a.fleet != nil {
		g.Go(func() error { return a.fleet.m.Run(gctx, a.fleet) })
		g.Go(func() error { return a.fleet.cmd.Run(gctx, a.fleet) })
	}
	if a.upd != nil {
		g.Go(func() error { return a.upd.Run(gctx, a) })
	}
	if srv != nil {
		g.Go(func() error { return srv.Serve(gctx) })
	}
	statusAddr := "off"
	if srv != nil {
		statusAddr = srv.Addr() // the bound port when status_listen ends in :0
	}
	warnExposure(a.log, cfg)
	a.log.Info("edge-agent running", "device_id", cfg.DeviceID, "sensors", len(cfg.Sensors),
		"buffered", st.Count, "buffer", cfg.Buffer.Path, "mqtt", cfg.MQTT.URL, "delivery", cfg.MQTT.Delivery, "status", statusAddr,
		"clock_synced", a.clk.Synced())
	a.o.Notify(sddaemon.SdNotifyReady)
	a.watchdog(gctx, pub)
	a.o.Notify(sddaemon.SdNotifyStopping)
	a.log.Info("edge-agent stopping")
	return g.Wait()
}

func (a *agent) publisherOptions() mqttpub.Options {
	c := a.cfg.MQTT
	po := mqttpub.Options{
		URL: c.URL, ClientID: c.ClientID, Username: c.Username, Password: c.Password, CAFile: c.CAFile,
		DeviceID: a.cfg.DeviceID, TopicPrefix: c.TopicPrefix, KeepAlive: c.KeepAlive, Window: c.MaxInflight,
		Delivery: mqttpub.Delivery(c.Delivery), ConfirmTimeout: c.ConfirmTimeout, MaxUnconfirmed: c.MaxUnconfirmed,
		PriorSeq:      a.startSeq,
		ConfirmKeys:   c.ConfirmKeys,
		Subscriptions: append(a.fleetSubscriptions(), a.updateSubscriptions()...),
		Status:        a.rep,
		Logger:        a.log.With("component", "mqtt"),
		Metrics: mqttpub.Metrics{
			Published: a.m.Published, Delivered: a.m.Delivered, DeleteErrors: a.m.DeleteErrors,
			Latency: a.m.PublishLatency, Connected: a.m.Connected,
			ConnectErrors: a.m.ConnectErrors, Disconnects: a.m.Disconnects,
			Confirmed: a.m.Confirmed, ConfirmLatency: a.m.ConfirmLatency, Resent: a.m.Resent, BadConfirms: a.m.BadConfirms,
		},
	}
	if a.o.MQTT != nil {
		a.o.MQTT(&po)
	}
	return po
}

func (a *agent) healthy() error {
	if _, err := a.buf.Stats(); err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	return nil
}

// warnExposure logs, at start, the settings that expose the device: a
// status endpoint other machines can reach (it serves every buffered
// reading and the metrics, without authentication), plaintext MQTT to
// another host (the password and the readings cross the network in clear),
// unsigned confirmations (anybody who can publish on the ack topic can
// delete readings) and a password file every local user can read.
func warnExposure(log *slog.Logger, cfg *config.Config) {
	if host, _, err := net.SplitHostPort(cfg.StatusListen); cfg.StatusListen != "" && err == nil && !mqttconn.IsLoopback(host) {
		log.Warn("status_listen is reachable from other machines: it serves every buffered reading and the metrics "+
			"without authentication; bind it to 127.0.0.1 unless a firewall keeps others out", "status_listen", cfg.StatusListen)
	}
	if u, err := url.Parse(cfg.MQTT.URL); err == nil && !isTLS(u.Scheme) && !mqttconn.IsLoopback(u.Hostname()) {
		log.Warn("mqtt.url is plaintext to another host (mqtt.insecure: true): the password and every reading "+
			"cross the network in clear; use ssl://", "host", u.Hostname())
	}
	if err := cfg.Strict(); err != nil {
		log.Warn("accepting unsigned confirmations: this config predates mqtt.confirm_keys_file, and "+
			"`edge-agent config check` refuses it; the agent keeps running as before", "err", err)
	} else if cfg.AcceptsUnsigned() {
		log.Warn("accepting unsigned confirmations (mqtt.confirm_unsigned: true): any login that can publish on the " +
			"device's ack topic can delete its unconfirmed readings; set mqtt.confirm_keys_file once the forwarders sign")
	}
	if f := cfg.MQTT.PasswordFile; f != "" {
		if fi, err := os.Stat(f); err == nil && fi.Mode().Perm()&0o004 != 0 {
			log.Warn("mqtt.password_file is readable by every user of this machine; "+
				"make it 0640 root:edge-agent (sudo chmod 0640 FILE; sudo chown root:edge-agent FILE)",
				"password_file", f, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
		}
	}
}

// logLimitEvery is how often one repeated warning or error of the buffer
// is logged.
const logLimitEvery = 10 * time.Second

// canStore is /healthz: healthy, and the last append was stored. A full
// disk is not a hang (the watchdog is still fed) but the agent is not doing
// its job: readings are taken and lost.
func (a *agent) canStore() error {
	if err := a.healthy(); err != nil {
		return err
	}
	if err := a.store.lastErr(); err != nil {
		if errors.Is(err, buffer.ErrNoSpace) {
			return fmt.Errorf("cannot store readings: the disk is full (free space under %s): %w", filepath.Dir(a.cfg.Buffer.Path), err)
		}
		return fmt.Errorf("cannot store readings: %w", err)
	}
	return nil
}

// store is the buffer as the pollers see it: it remembers whether the
// last append failed.
type store struct {
	buf    *buffer.Buffer
	fault  func() error
	last   atomic.Pointer[error]
	lastOK atomic.Int64 // unix ns of the last append that stored
}

func (s *store) Append(ctx context.Context, rs ...*reading.Reading) error {
	var err error
	if s.fault != nil {
		err = s.fault()
	}
	if err == nil {
		err = s.buf.Append(ctx, rs...)
	}
	if err != nil {
		s.last.Store(&err)
		return err
	}
	s.last.Store(nil)
	s.lastOK.Store(time.Now().UnixNano())
	return nil
}

func (s *store) lastErr() error {
	if p := s.last.Load(); p != nil {
		return *p
	}
	return nil
}

// watchdog is the main loop: it pets systemd's watchdog every half
// WatchdogSec while the agent is alive (see alive), until ctx ends.
func (a *agent) watchdog(ctx context.Context, pub *mqttpub.Publisher) {
	every := a.o.watchdogEvery
	if every <= 0 {
		d, err := sddaemon.SdWatchdogEnabled(false)
		if err != nil || d <= 0 {
			<-ctx.Done()
			return
		}
		every = d / 2
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.alive(pub); err != nil {
				a.log.Error("the agent is stuck; not petting the watchdog (systemd restarts it)", "err", err)
				continue
			}
			a.o.Notify(sddaemon.SdNotifyWatchdog)
		}
	}
}

// alive is what the watchdog is fed on: the buffer answers, every poll
// loop ticks (its appends return: stored, or refused by a full disk, which
// is not a hang), and the publisher makes progress when it has work and a
// connection (a network outage is not a hang either). A check that blocks
// (a deadlock) blocks the watchdog loop too, which stops the pets just the
// same.
func (a *agent) alive(pub *mqttpub.Publisher) error {
	if err := a.healthy(); err != nil {
		return err
	}
	if err := a.live.Check(time.Now()); err != nil {
		return err
	}
	return pub.Stalled()
}

// pollers runs the sensor pollers, restarting them with the new sensors
// list on each reload signal.
func (a *agent) pollers(ctx context.Context) error {
	specs := a.cfg.Sensors
	for {
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- poller.Run(pctx, a.pollerOptions(specs)) }()
		for reloaded := false; !reloaded; {
			select {
			case <-ctx.Done():
				cancel()
				return <-done
			case ch := <-a.sensors:
				cancel()
				err := <-done
				close(ch.stopped)
				if err != nil {
					return err
				}
				a.log.Info("fleet config: sensors applied in place", "sensors", len(ch.specs))
				specs, reloaded = ch.specs, true
			case <-a.o.Reload:
				// RELOADING=1 ... READY=1 is what Type=notify-reload expects;
				// plain Type=notify accepts it too.
				a.o.Notify(sddaemon.SdNotifyReloading + "\n" + sddaemon.SdNotifyMonotonicUsec())
				next, ok := a.reload()
				if !ok {
					a.o.Notify(sddaemon.SdNotifyReady)
					continue
				}
				cancel()
				if err := <-done; err != nil {
					return err
				}
				specs, reloaded = next, true
				a.o.Notify(sddaemon.SdNotifyReady)
			}
		}
	}
}

func (a *agent) pollerOptions(specs []drivers.Spec) poller.Options {
	env := drivers.Env{SysfsRoot: a.cfg.SysfsRoot, Logger: a.log.With("component", "drivers")}
	return poller.Options{
		DeviceID: a.cfg.DeviceID,
		Sensors:  specs,
		Open:     func(s drivers.Spec) (drivers.Sensor, error) { return drivers.Open(s, env) },
		Buffer:   &a.store,
		Clock:    a.clk,
		Logger:   a.log.With("component", "poller"),
		Metrics: poller.Metrics{Readings: a.m.Readings, Errors: a.m.SensorErrors, StoreErrors: a.m.AppendErrors,
			Suppressed: a.m.Suppressed},
		Liveness: &a.live,
		Health:   &a.health,
	}
}

// reload re-reads the config file; only the sensors list is applied.
func (a *agent) reload() ([]drivers.Spec, bool) {
	path := a.cfg.Path()
	next, err := config.Load(path, a.o.Getenv)
	if err != nil {
		a.log.Error("reload: config not applied; keeping the current sensors", "err", err)
		return nil, false
	}
	if rep, ok := a.FleetReport(); ok && rep.Source == "remote" {
		// The sensors in force come from the file layered with remote
		// documents; the file's alone would undo them.
		a.log.Warn("reload: a remote fleet config is in force; restart the agent (systemctl restart edge-agent) to apply the file under it",
			"fleet_config", rep.Version)
		return nil, false
	}
	cur := *a.cfg
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"device_id", next.DeviceID != cur.DeviceID},
		{"buffer", next.Buffer != cur.Buffer},
		{"mqtt", !reflect.DeepEqual(next.MQTT, cur.MQTT)},
		{"status_listen", next.StatusListen != cur.StatusListen},
		{"sysfs_root", next.SysfsRoot != cur.SysfsRoot},
		{"clock", next.Clock != cur.Clock},
	} {
		if k.changed {
			a.log.Warn("reload: key changed but only sensors are reloaded; restart the agent to apply it", "key", k.key)
		}
	}
	if next.StatusInterval != a.rep.Interval() {
		a.rep.SetInterval(next.StatusInterval)
		a.log.Info("reload: status_interval applied", "status_interval", next.StatusInterval.String())
	}
	a.cfgInUse.Store(&heartbeat.Config{Version: next.Version(), Source: configSourceFile})
	a.log.Info("reload: sensors reloaded", "config", path, "sensors", len(next.Sensors))
	return next.Sensors, true
}

// clockLoop watches for the NTP sync and then corrects the timestamps of
// this run's unsynced readings still in the buffer.
func (a *agent) clockLoop(ctx context.Context) {
	t := time.NewTicker(a.o.ClockCheckEvery)
	defer t.Stop()
	pending := 0 // corrections still to run after the sync
	if a.clk.Synced() {
		// Synced at start: an earlier run of this boot may have left
		// readings taken before the sync.
		pending = 1
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a.checkClock(ctx) {
			pending = 2
		}
		a.noteHold()
		// A reading stamped just before the sync may be appended just
		// after the first pass; a second pass one tick later catches it.
		if pending > 0 {
			pending--
			a.correct(ctx)
		}
	}
}

// checkClock reports whether the clock became synced on this call.
func (a *agent) checkClock(_ context.Context) bool {
	became, err := a.clk.Check()
	if err != nil {
		if err.Error() != a.clockErr {
			a.clockErr = err.Error()
			a.log.Warn("cannot tell whether the clock is synced; readings are marked time_synced=false", "err", err)
		}
		return false
	}
	if a.clk.Synced() {
		a.m.ClockSynced.Set(1)
	}
	if became {
		a.log.Info("clock synced", "step", a.clk.Offset().Round(time.Millisecond).String())
	}
	return became
}

// correct gives the buffered readings taken in this boot before the sync
// their true time (agent/clock: boot stamps), whichever run took them.
func (a *agent) correct(ctx context.Context) {
	n, err := a.buf.UpdateUnsynced(ctx, a.clk.Correct)
	a.m.TSCorrected.Add(n)
	if err != nil && ctx.Err() == nil {
		a.log.Error("correcting buffered timestamps", "err", err, "corrected", n)
		return
	}
	if n > 0 {
		a.log.Info("corrected timestamps of buffered readings", "count", n, "step", a.clk.Offset().Round(time.Millisecond).String())
	}
}

func isTLS(scheme string) bool { tls, _ := mqttconn.TLS(scheme); return tls }

// whenFull maps buffer.when_full (validated) to the buffer's option; a
// version on trial does not downsample (see trial).
func (a *agent) whenFull(s string) buffer.WhenFull {
	if s == config.WhenFullDrop || a.trial() {
		return buffer.Drop
	}
	return buffer.Downsample
}
