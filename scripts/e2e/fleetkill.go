package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// The fleet run's "ten devices killed" phase: after the config change,
// some simulated devices die. Half lose their connection without a clean
// stop (their link to the broker closed under them, so the broker sends
// their last will); the other half hang (their heartbeats and sensors
// stop, the connection stays up). Then the run times how long until
// `cloud-forwarder fleet status --json` (the real binary: from the sink's
// database when the run has one, else from the broker) and the Fleet
// dashboard's "not reporting" query list exactly those devices. At the end
// the dead come back, so their queues drain and the (device_id, seq) count
// covers them too.

// fleetAgent is the agent version the simulated devices report.
const fleetAgent = "e2e-sim"

// killSlack is what the kill phase allows past 3 status intervals: the
// relay of the last heartbeat to the database, and the poll.
const killSlack = time.Second

// simStatus is a simulated device's heartbeat (mqttpub.StatusSource): the
// fields the fleet views read, every interval, and nothing while hung.
type simStatus struct {
	interval time.Duration
	delivery string
	mgr      *remote.Manager // nil without -fleet-config
	hung     atomic.Bool
	wake     chan struct{} // closed when the device comes back
	sent     *atomic.Int64 // heartbeats published, over the fleet
}

func newSimStatus(interval time.Duration, delivery string, mgr *remote.Manager, sent *atomic.Int64) *simStatus {
	return &simStatus{interval: interval, delivery: delivery, mgr: mgr, wake: make(chan struct{}), sent: sent}
}

func (s *simStatus) heartbeat(state string, ts int64) []byte {
	h := heartbeat.Heartbeat{State: state, TS: ts, Agent: fleetAgent, Delivery: s.delivery,
		StatusInterval: int64(s.interval / time.Second)}
	if s.mgr != nil {
		r := s.mgr.Report()
		h.Config = &heartbeat.Config{Version: r.Version, Source: r.Source, State: r.State, Error: r.Error}
	}
	return heartbeat.Encode(&h)
}

func (s *simStatus) Status(state string) []byte {
	s.sent.Add(1)
	return s.heartbeat(state, time.Now().Unix())
}

// Will has no ts, as the agent's (agent/status).
func (s *simStatus) Will() []byte { return s.heartbeat(heartbeat.Offline, 0) }

func (s *simStatus) Due(ctx context.Context) error {
	t := time.NewTimer(s.interval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	if s.hung.Load() {
		select { // a hung agent says nothing until it is back
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		}
	}
	return nil
}

// fleetVictims are the devices the kill phase kills: n spread over the
// fleet, every other one through the link that is cut (the others hang).
func fleetVictims(fleet, n int) (cut, hung []int) {
	for k := range n {
		i := k * fleet / n
		if k%2 == 0 {
			cut = append(cut, i)
		} else {
			hung = append(hung, i)
		}
	}
	return cut, hung
}

// killReport is what the kill phase measured.
type killReport struct {
	Killed    []string `json:"killed"`
	Cut       int      `json:"connection_dropped"`
	Hung      int      `json:"hung"`
	IntervalS float64  `json:"status_interval_s"`
	// From the kill until `fleet status` (and the dashboard's query)
	// listed exactly the killed devices as not reporting.
	StatusFrom  string  `json:"fleet_status_from"` // database or broker
	StatusS     float64 `json:"fleet_status_detect_s"`
	DashboardS  float64 `json:"dashboard_detect_s,omitempty"`
	DashboardDB bool    `json:"dashboard_checked"`
	Err         string  `json:"error,omitempty"`
}

// kill kills the victims (cutting link, hanging hung), then waits until
// both views list exactly them as not reporting, at most limit.
func (s *stack) killDevices(ctx context.Context, link *tcpproxy.Proxy, hung []*simStatus, victims []string, interval, limit time.Duration) killReport {
	rep := killReport{Killed: victims, Cut: len(victims) - len(hung), Hung: len(hung), IntervalS: interval.Seconds(), StatusFrom: "broker"}
	if s.sink != nil {
		rep.StatusFrom = "database"
	}
	var dashSQL string
	if s.sink != nil {
		var err error
		if dashSQL, err = testkit.NotReportingSQL(testkit.FleetDashboard); err != nil { // run from the repository root
			rep.Err = err.Error()
			return rep
		}
		rep.DashboardDB = true
	}
	at := time.Now()
	link.SetMode(tcpproxy.Refuse)
	for _, h := range hung {
		h.hung.Store(true)
	}
	s.log.Info("devices killed", "cut", rep.Cut, "hung", rep.Hung, "devices", victims)
	deadline := at.Add(limit)
	for rep.StatusS == 0 || (rep.DashboardDB && rep.DashboardS == 0) {
		if rep.StatusS == 0 {
			got, err := s.fleetStatusNotReporting(ctx, interval)
			switch {
			case err != nil:
				s.log.Warn("fleet status", "err", err)
			case slices.Equal(got, victims):
				rep.StatusS = time.Since(at).Seconds()
				s.log.Info("fleet status lists the killed devices", "after", time.Since(at).Round(time.Millisecond))
			}
		}
		if rep.DashboardDB && rep.DashboardS == 0 {
			got, err := s.sink.column(ctx, dashSQL)
			switch {
			case err != nil:
				s.log.Warn("dashboard query", "err", err)
			case slices.Equal(got, victims):
				rep.DashboardS = time.Since(at).Seconds()
				s.log.Info("the Fleet dashboard lists the killed devices", "after", time.Since(at).Round(time.Millisecond))
			}
		}
		if time.Now().After(deadline) {
			rep.Err = fmt.Sprintf("not every view listed exactly the %d killed devices within %v", len(victims), limit)
			return rep
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			rep.Err = err.Error()
			return rep
		}
	}
	return rep
}

// revive brings the killed devices back: the link passes again and the
// hung ones speak.
func revive(link *tcpproxy.Proxy, hung []*simStatus) {
	link.SetMode(tcpproxy.Pass)
	for _, h := range hung {
		if h.hung.Swap(false) {
			close(h.wake)
		}
	}
}

// fleetStatusNotReporting runs `cloud-forwarder fleet status --json` and
// returns the devices it says are not reporting, sorted. From the broker,
// --stale is 3 status intervals (the database applies each device's own).
func (s *stack) fleetStatusNotReporting(ctx context.Context, interval time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	args := []string{"fleet", "status", "--json"}
	env := os.Environ()
	if s.sink != nil {
		env = append(env, "DATABASE_URL="+s.sink.url)
	} else {
		args = append(args, "--stale", (3 * interval).String(), "--wait", "1s")
		env = append(env, "FLEET_MQTT_URL=ssl://"+s.mqtt, "FLEET_CA_FILE="+s.certs.CAFile,
			"FLEET_STATUS_USERNAME="+monitorUser, "FLEET_STATUS_PASSWORD="+monitorPass)
	}
	cmd := exec.CommandContext(ctx, s.bin("cloud-forwarder"), args...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cloud-forwarder fleet status: %w: %s", err, stderr.String())
	}
	var devs []struct {
		ID        string `json:"device"`
		Reporting bool   `json:"reporting"`
	}
	if err := json.Unmarshal(out, &devs); err != nil {
		return nil, fmt.Errorf("cloud-forwarder fleet status --json: %w", err)
	}
	var not []string
	for _, d := range devs {
		if !d.Reporting {
			not = append(not, d.ID)
		}
	}
	slices.Sort(not)
	return not, nil
}

// column runs q and returns its first column as text.
func (st *sinkStage) column(ctx context.Context, q string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, st.url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
