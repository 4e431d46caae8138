package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// The fleet run's remote-config phase (-fleet-config): every simulated
// device runs the agent's own remote.Manager on the fleet topic, and the
// operator's `cloud-forwarder fleet config push --fleet` changes every
// device's sensor interval mid-run.

// fleetInterval is each simulated sensor's interval before the push;
// the pushed document doubles it.
const fleetInterval = time.Second

// fleetRemote holds the fleet key and every device's manager.
type fleetRemote struct {
	dir, keyFile, pubFile string
	mu                    sync.Mutex
	managers              []*remote.Manager
}

func newFleetRemote(dir string) (*fleetRemote, error) {
	k, err := sign.Generate()
	if err != nil {
		return nil, err
	}
	f := &fleetRemote{dir: filepath.Join(dir, "fleet"), keyFile: filepath.Join(dir, "fleet.key"), pubFile: filepath.Join(dir, "fleet-keys.pem")}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(f.keyFile, k.PrivatePEM(), 0o600); err != nil {
		return nil, err
	}
	return f, os.WriteFile(f.pubFile, k.PublicPEM(), 0o644)
}

// simDevice is a simulated device's side of remote config: the interval
// its sensors run at, changed in place by Apply.
type simDevice struct {
	q        *memQueue
	interval atomic.Int64 // per sensor
	lastAdd  atomic.Int64 // unix ns
}

func (d *simDevice) Apply(_ context.Context, next *config.Config) (bool, error) {
	d.interval.Store(int64(next.Sensors[0].Interval))
	return false, nil
}

func (d *simDevice) Stored(since time.Time) error {
	if d.lastAdd.Load() > since.UnixNano() {
		return nil
	}
	return fmt.Errorf("no reading since %s", since.Format(time.RFC3339Nano))
}

// device sets up id's manager; it returns the subscription the device's
// publisher adds, the manager and the function that runs it.
func (f *fleetRemote) device(id string, d *simDevice, sensors int) (mqttpub.Subscription, *remote.Manager, func(context.Context), error) {
	dir := filepath.Join(f.dir, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return mqttpub.Subscription{}, nil, nil, err
	}
	y := fmt.Sprintf("device_id: %s\nbuffer: {path: %s}\nmqtt: {url: 'tcp://127.0.0.1:1'}\nfleet: {keys_file: %s, grace: 10s}\nsensors:\n",
		id, filepath.Join(dir, "buffer.db"), f.pubFile)
	for k := range sensors {
		y += fmt.Sprintf("  - {name: sim-%d, driver: sim, interval: %v}\n", k, fleetInterval)
	}
	local, err := config.Parse([]byte(y), func(string) string { return "" })
	if err != nil {
		return mqttpub.Subscription{}, nil, nil, err
	}
	keys, err := sign.LoadVerifier(f.pubFile)
	if err != nil {
		return mqttpub.Subscription{}, nil, nil, err
	}
	m, start, err := remote.New(remote.Options{Local: local, Verifier: keys, StateDir: dir})
	if err != nil {
		return mqttpub.Subscription{}, nil, nil, err
	}
	d.interval.Store(int64(start.Sensors[0].Interval))
	f.mu.Lock()
	f.managers = append(f.managers, m)
	f.mu.Unlock()
	sub := mqttpub.Subscription{Topic: remote.ConfigTopic("sensors", remote.LevelFleet, ""),
		Handle: func(p []byte) { m.Offer(remote.LevelFleet, p) }}
	return sub, m, func(ctx context.Context) { _ = m.Run(ctx, d) }, nil
}

// applied counts the devices reporting version in one of states.
func (f *fleetRemote) applied(version string, states ...string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.managers {
		if r := m.Report(); r.Version == version && slices.Contains(states, r.State) {
			n++
		}
	}
	return n
}

// push runs what an operator types to change the interval on every device.
func (f *fleetRemote) push(ctx context.Context, s *stack, interval time.Duration) error {
	doc := filepath.Join(f.dir, "interval.yaml")
	if err := os.WriteFile(doc, []byte(fmt.Sprintf("sensor_interval: %v\n", interval)), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, s.bin("cloud-forwarder"), "fleet", "config", "push", "--fleet", doc)
	cmd.Env = append(os.Environ(), "FLEET_MQTT_URL=ssl://"+s.mqtt, "FLEET_CA_FILE="+s.certs.CAFile,
		"FLEET_USERNAME="+operatorUser, "FLEET_PASSWORD="+operatorPass, "FLEET_KEY_FILE="+f.keyFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("cloud-forwarder fleet config push: %w\n%s", err, out)
	}
	s.log.Info("fleet config pushed", "out", string(out))
	return nil
}

// waitApplied waits until every one of n devices reports version in one
// of states, and returns how long that took from since.
func (f *fleetRemote) waitApplied(ctx context.Context, n int, version string, states []string, since time.Time, limit time.Duration) (time.Duration, int, error) {
	deadline := since.Add(limit)
	for {
		got := f.applied(version, states...)
		if got == n {
			return time.Since(since), got, nil
		}
		if time.Now().After(deadline) {
			return time.Since(since), got, fmt.Errorf("fleet config %s: %d of %d devices %v after %v (one reports %+v)", version, got, n, states, limit, f.sample(version, states))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return 0, got, err
		}
	}
}

// sample returns the report of a device not at version in states.
func (f *fleetRemote) sample(version string, states []string) remote.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.managers {
		if r := m.Report(); r.Version != version || !slices.Contains(states, r.State) {
			return r
		}
	}
	return remote.Report{}
}
