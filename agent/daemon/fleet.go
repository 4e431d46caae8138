package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/agent/sensorscmd"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/drivers"
)

// fleet is the agent's side of remote config and commands (agent/remote),
// present when fleet.keys_file is set.
type fleet struct {
	a   *agent
	m   *remote.Manager
	cmd *remote.Commander
	pub *mqttpub.Publisher // set before the goroutines start
	mu  sync.Mutex
	cur *config.Config // the config running now (the layered one)
}

// sensorsChange hands new sensors to the pollers; stopped is closed when
// the old poll loops have ended.
type sensorsChange struct {
	specs   []drivers.Spec
	stopped chan struct{}
}

// setupFleet loads the fleet keys and the persisted remote config, and
// returns the config to start with.
func (a *agent) setupFleet(local *config.Config) (*config.Config, error) {
	if local.Fleet.KeysFile == "" {
		return local, nil
	}
	keys, err := sign.LoadVerifier(local.Fleet.KeysFile)
	if err != nil {
		return nil, &config.Error{Key: "fleet.keys_file", Msg: err.Error(), Err: err}
	}
	dir := filepath.Dir(local.Buffer.Path)
	f := &fleet{a: a}
	m, start, err := remote.New(remote.Options{Local: local, Verifier: keys, StateDir: dir,
		Logger: a.log.With("component", "fleet"), OnChange: a.fleetChanged})
	if err != nil {
		return nil, fmt.Errorf("fleet config state: %w", err)
	}
	cmd, err := remote.NewCommander(remote.CommanderOptions{DeviceID: local.DeviceID, Verifier: keys, StateDir: dir,
		Synced: func() bool { return a.clk != nil && a.clk.Synced() },
		Publish: func(ctx context.Context, p []byte) error {
			return f.pub.Publish(ctx, remote.ResultTopic(local.MQTT.TopicPrefix, local.DeviceID), p, false)
		},
		Logger: a.log.With("component", "fleet")})
	if err != nil {
		return nil, err
	}
	f.m, f.cmd, f.cur = m, cmd, start
	a.fleet = f
	if a.o.LogLevel != nil {
		a.o.LogLevel.Set(start.LogLevel)
	}
	if r := m.Report(); r.Source == "remote" {
		a.log.Info("fleet config in force", "version", r.Version, "state", r.State)
	}
	return start, nil
}

// fleetChanged is called when the remote config's report changes.
func (a *agent) fleetChanged() {
	if a.rep != nil { // nil while remote.New reports the state it loaded
		a.rep.Changed()
	}
	if a.o.fleetChanged != nil {
		a.o.fleetChanged()
	}
}

// FleetReport is the remote config's state for the heartbeat; ok false
// when remote config is off (no fleet.keys_file).
func (a *agent) FleetReport() (remote.Report, bool) {
	if a.fleet == nil {
		return remote.Report{}, false
	}
	return a.fleet.m.Report(), true
}

// subscriptions are the fleet topics the publisher subscribes to.
func (f *fleet) subscriptions(c *config.Config) []mqttpub.Subscription {
	prefix, dev := c.MQTT.TopicPrefix, c.DeviceID
	subs := []mqttpub.Subscription{
		{Topic: remote.ConfigTopic(prefix, remote.LevelFleet, ""), Handle: func(p []byte) { f.m.Offer(remote.LevelFleet, p) }},
		{Topic: remote.ConfigTopic(prefix, remote.LevelDevice, dev), Handle: func(p []byte) { f.m.Offer(remote.LevelDevice, p) }},
		{Topic: remote.CommandTopic(prefix, dev), Handle: f.cmd.Offer},
	}
	if g := c.Fleet.Group; g != "" {
		subs = append(subs, mqttpub.Subscription{Topic: remote.ConfigTopic(prefix, remote.LevelGroup, g),
			Handle: func(p []byte) { f.m.Offer(remote.LevelGroup, p) }})
	}
	return subs
}

// Apply implements remote.Applier: sensors (and their intervals) and the
// log level change in place; anything else needs a restart.
func (f *fleet) Apply(ctx context.Context, next *config.Config) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key := restartKey(f.cur, next); key != "" {
		f.a.log.Info("fleet config changes a key the running agent cannot change in place; restarting (systemd starts the agent again)", "key", key)
		return true, nil
	}
	if next.LogLevel != f.cur.LogLevel {
		if f.a.o.LogLevel == nil {
			return true, nil
		}
		f.a.o.LogLevel.Set(next.LogLevel)
	}
	if next.StatusInterval != f.cur.StatusInterval && f.a.rep != nil {
		f.a.rep.SetInterval(next.StatusInterval)
	}
	if !reflect.DeepEqual(next.Sensors, f.cur.Sensors) {
		ch := sensorsChange{specs: next.Sensors, stopped: make(chan struct{})}
		select {
		case f.a.sensors <- ch:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		// The old poll loops have stored their last readings: what is
		// stored from now on was taken under next.
		select {
		case <-ch.stopped:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	f.cur = next
	return false, nil
}

// restartKey names the first top-level key that differs between cur and
// next other than those Apply changes in place; "" when there is none.
func restartKey(cur, next *config.Config) string {
	a, b := *cur, *next
	a.Sensors, b.Sensors = nil, nil
	a.LogLevel, b.LogLevel = 0, 0
	a.StatusInterval, b.StatusInterval = 0, 0 // the heartbeat's reporter takes it in place
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"buffer", a.Buffer != b.Buffer},
		{"clock", a.Clock != b.Clock},
		{"mqtt", !reflect.DeepEqual(a.MQTT, b.MQTT)},
		{"config", !reflect.DeepEqual(a, b)},
	} {
		if k.changed {
			return k.key
		}
	}
	return ""
}

// Stored implements remote.Applier: nil once a reading was stored after
// since, else why not, sensor by sensor.
func (f *fleet) Stored(since time.Time) error {
	a := f.a
	if t := a.store.lastOK.Load(); t > since.UnixNano() {
		return nil
	}
	if err := a.store.lastErr(); err != nil {
		return fmt.Errorf("cannot store readings: %w", err)
	}
	snap, _ := a.health.Snapshot()
	var why []string
	for name, s := range snap {
		if s.LastError != "" && s.LastErrorAt.After(since) {
			why = append(why, name+": "+s.LastError)
		}
	}
	sort.Strings(why)
	if len(why) == 0 {
		return errors.New("no sensor read")
	}
	return fmt.Errorf("no sensor read: %s", strings.Join(why, "; "))
}

// Execute implements remote.Executor.
func (f *fleet) Execute(ctx context.Context, name string) (any, error) {
	a := f.a
	switch name {
	case remote.CmdResend:
		if d := f.pub.Delivery(); d.Mode != mqttpub.DeliveryKafka {
			return nil, fmt.Errorf("delivery is %s: nothing waits for a confirmation", d.Mode)
		}
		return map[string]int{"due": f.pub.ResendNow()}, nil
	case remote.CmdSensors:
		f.mu.Lock()
		specs := f.cur.Sensors
		f.mu.Unlock()
		env := drivers.Env{SysfsRoot: a.cfg.SysfsRoot, Logger: a.log.With("component", "drivers")}
		snap, _ := a.health.Snapshot()
		out := make([]sensorscmd.Result, 0, len(specs))
		for _, s := range specs {
			r := sensorscmd.ReadOnce(ctx, s, env)
			if h, ok := snap[s.Name]; ok {
				r.Health = &h
			}
			out = append(out, r)
		}
		return out, nil
	case remote.CmdBufferStats:
		st, err := a.buf.Stats()
		if err != nil {
			return nil, err
		}
		d := f.pub.Delivery()
		return map[string]any{"buffer": st, "delivery": map[string]any{"mode": d.Mode, "unconfirmed": d.Unconfirmed,
			"deleting": d.Deleting, "oldest_unconfirmed": d.OldestUnconfirmed, "last_confirm": d.LastConfirm}}, nil
	}
	return nil, fmt.Errorf("%w: %s", remote.ErrUnknownCommand, name)
}

// handler serves GET /fleet on the status endpoint: the remote config's
// report.
func (f *fleet) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(f.m.Report())
	})
}

// fleetSubscriptions are the publisher's fleet topics; none when remote
// config is off.
func (a *agent) fleetSubscriptions() []mqttpub.Subscription {
	if a.fleet == nil {
		return nil
	}
	return a.fleet.subscriptions(a.cfg)
}

// with adds extra's handlers to m.
func with(extra, m map[string]http.Handler) map[string]http.Handler {
	for k, v := range extra {
		m[k] = v
	}
	return m
}
