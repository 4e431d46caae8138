package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/agent/status"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/e2e/internal/topicread"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// The fleet run replaces the one real edge-agent with many simulated
// devices in this process: each is the agent's own publisher (mqttpub)
// draining an in-memory queue that its sensors fill. It measures what a
// fleet costs the broker and the forwarders, in delivery=kafka against
// delivery=broker.

const (
	fleetPass = "fleet-pw-e2e" // every simulated device's; each has its own login
	sysUser   = "e2e-sys"
	sysPass   = "sys-pw-e2e"
)

// fleetDevice is the i-th simulated device's id and broker login.
func fleetDevice(i int) string { return fmt.Sprintf("fleet-%04d", i) }

// memQueue is a device's buffer kept in memory: the fleet run measures the
// broker and the forwarders, not 500 SD cards.
type memQueue struct {
	mu      sync.Mutex
	recs    []buffer.Record // by seq
	deleted map[uint64]bool
	seq     uint64
	grew    chan struct{} // closed and replaced on every append
}

func newMemQueue() *memQueue {
	return &memQueue{deleted: map[uint64]bool{}, grew: make(chan struct{})}
}

func (q *memQueue) add(dev, sensor string, now time.Time, v float64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.seq++
	r := reading.Reading{DeviceID: dev, Seq: q.seq, Sensor: sensor, Kind: "sim", TS: now, TimeSynced: true,
		Values: map[string]float64{reading.Temperature: v}}
	q.recs = append(q.recs, buffer.Record{Seq: q.seq, Sensor: sensor, Payload: reading.Encode(nil, &r)})
	close(q.grew)
	q.grew = make(chan struct{})
}

// Peek returns up to n records with Seq > after that are not deleted.
func (q *memQueue) Peek(after uint64, n int) ([]buffer.Record, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	i, _ := slices.BinarySearchFunc(q.recs, after+1, func(r buffer.Record, s uint64) int { return cmp.Compare(r.Seq, s) })
	var out []buffer.Record
	for ; i < len(q.recs) && len(out) < n; i++ {
		if !q.deleted[q.recs[i].Seq] {
			out = append(out, q.recs[i])
		}
	}
	return out, nil
}

// Delete forgets seqs; the deleted head is dropped from memory.
func (q *memQueue) Delete(_ context.Context, seqs ...uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range seqs {
		q.deleted[s] = true
	}
	k := 0
	for k < len(q.recs) && q.deleted[q.recs[k].Seq] {
		delete(q.deleted, q.recs[k].Seq)
		k++
	}
	q.recs = q.recs[k:]
	return nil
}

// Wait blocks until a record with Seq > after exists.
func (q *memQueue) Wait(ctx context.Context, after uint64) error {
	for {
		q.mu.Lock()
		ok, ch := q.seq > after, q.grew
		q.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (q *memQueue) state() (produced uint64, held int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.seq, len(q.recs) - len(q.deleted)
}

// fleetReport is what the fleet run measured.
type fleetReport struct {
	Delivery           string  `json:"delivery"`
	Devices            int     `json:"devices"`
	SensorsPerDevice   int     `json:"sensors_per_device"`
	WindowS            float64 `json:"window_s"`
	ReadingsPerS       float64 `json:"readings_per_s"`
	BrokerMsgsPerS     float64 `json:"broker_publishes_received_per_s"`
	BrokerPerReading   float64 `json:"broker_messages_per_reading"`
	ConfirmsPerS       float64 `json:"confirmations_per_s"`
	FwdCPUPerReadingUS float64 `json:"forwarder_cpu_us_per_reading"`
	Produced           uint64  `json:"produced"`
	Delivered          uint64  `json:"delivered"`
	Missing            uint64  `json:"missing"`
	Duplicates         uint64  `json:"duplicates"`
	HeldAtEnd          int     `json:"held_at_end"`
	// -fleet-config: the push, how long until every device reported the
	// new version (applied) and stored a reading under it (working), and
	// the readings' rate afterwards.
	ConfigPushS       float64 `json:"config_push_s,omitempty"`
	ConfigAppliedS    float64 `json:"config_applied_all_s,omitempty"`
	ConfigApplied     int     `json:"config_applied_devices,omitempty"`
	ConfigWorkingS    float64 `json:"config_working_all_s,omitempty"`
	ConfigWorking     int     `json:"config_working_devices,omitempty"`
	ReadingsPerSAfter float64 `json:"readings_per_s_after_config,omitempty"`
	// The heartbeats in the window, at the run's status interval, and the
	// broker's messages per reading with them at the default interval.
	HeartbeatsPerS            float64       `json:"heartbeats_per_s"`
	OtherPerS                 float64       `json:"other_publishes_per_s"` // re-sends, and the $SYS sampling's error
	StatusIntervalS           float64       `json:"status_interval_s"`
	BrokerPerReadingDefaultHB float64       `json:"broker_messages_per_reading_default_status_interval"`
	Kill                      *killReport   `json:"kill,omitempty"`
	Update                    *updateReport `json:"update,omitempty"`
	Pass                      bool          `json:"pass"`
}

// fleetRun starts the devices, measures a window of steady running, stops
// the sensors, waits for every queue to empty and counts Kafka's topic.
func fleetRun(ctx context.Context, s *stack, stdout io.Writer) error {
	o := s.opts
	delivery := mqttpub.DeliveryKafka
	if o.delivery == "broker" {
		delivery = mqttpub.DeliveryBroker
	}
	cliTLS := s.certs.Client()
	type device struct {
		id string
		q  *memQueue
		sd *simDevice
		st *simStatus
	}
	const sensors = 4
	var fr *fleetRemote
	if o.fleetCfg {
		var err error
		if fr, err = newFleetRemote(s.dir); err != nil {
			return err
		}
	}
	var fu *fleetUpdate
	if o.fleetUpd {
		var err error
		if fu, err = newFleetUpdate(s.dir); err != nil {
			return err
		}
	}
	devs := make([]device, o.fleet)
	var heartbeats atomic.Int64 // published by every device
	// The devices the kill phase cuts off reach the broker through a
	// link of their own.
	cutIdx, hungIdx := fleetVictims(o.fleet, o.fleetKill)
	link, err := tcpproxy.Listen("127.0.0.1:0", s.mqtt)
	if err != nil {
		return err
	}
	defer link.Close()
	var wg sync.WaitGroup
	pubCtx, stopPubs := context.WithCancel(ctx)
	defer func() { stopPubs(); wg.Wait() }()
	for i := range devs {
		d := device{id: fleetDevice(i), q: newMemQueue()}
		d.sd = &simDevice{q: d.q}
		d.sd.interval.Store(int64(fleetInterval))
		devs[i] = d
		po := mqttpub.Options{URL: "ssl://" + s.mqtt, DeviceID: d.id, Username: d.id,
			Password: config.Secret(fleetPass), TLS: cliTLS, Delivery: delivery, ConfirmTimeout: o.confirmTO, KeepAlive: 30 * time.Second,
			ConfirmKeys: s.keys.Keys}
		var mgr *remote.Manager
		if fr != nil {
			sub, m, runRemote, err := fr.device(d.id, d.sd, sensors)
			if err != nil {
				return err
			}
			mgr = m
			po.Subscriptions = []mqttpub.Subscription{sub}
			wg.Add(1)
			go func() { defer wg.Done(); runRemote(pubCtx) }()
		}
		d.st = newSimStatus(o.fleetHB, o.delivery, mgr, &heartbeats)
		po.Status = d.st
		if fu != nil {
			in := fu.device(pubCtx, d.id)
			po.Subscriptions = append(po.Subscriptions, in.subscription())
			po.Status = updStatus{d.st, in}
		}
		if slices.Contains(cutIdx, i) {
			// Back soon after the link is: the drain waits for them.
			po.URL, po.MaxBackoff = "ssl://"+link.Addr(), 2*time.Second
		}
		devs[i] = d
		p, err := mqttpub.New(d.q, po)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Run(pubCtx) }()
	}

	// Sensors: each device's sensors read once an interval (1s; a fleet
	// config may change it), spread over the interval.
	sensCtx, stopSensors := context.WithCancel(ctx)
	var sens sync.WaitGroup
	for i, d := range devs {
		sens.Add(1)
		go func() {
			defer sens.Done()
			offset := time.Duration(i) * time.Second / time.Duration(len(devs))
			select {
			case <-time.After(offset):
			case <-sensCtx.Done():
				return
			}
			t := time.NewTimer(time.Duration(d.sd.interval.Load()) / sensors)
			defer t.Stop()
			for k := 0; ; k++ {
				if now := time.Now(); !d.st.hung.Load() { // a hung agent reads nothing
					d.q.add(d.id, "sim-"+strconv.Itoa(k%sensors), now, 20+float64(k%100)/10)
					d.sd.lastAdd.Store(now.UnixNano())
				}
				select {
				case <-t.C:
					t.Reset(time.Duration(d.sd.interval.Load()) / sensors)
				case <-sensCtx.Done():
					return
				}
			}
		}()
	}
	produced := func() (n uint64, held int) {
		for _, d := range devs {
			p, h := d.q.state()
			n += p
			held += h
		}
		return n, held
	}

	sys, err := s.sysCounter(ctx)
	if err != nil {
		stopSensors()
		return err
	}
	defer sys.close()
	s.log.Info("fleet running", "devices", o.fleet, "sensors_each", sensors, "delivery", o.delivery, "warmup", o.warmup)
	if err := sleepCtx(ctx, o.warmup); err != nil {
		stopSensors()
		return err
	}
	type snap struct {
		at         time.Time
		readings   uint64
		brokerRx   float64
		cpu        time.Duration
		confirms   float64
		heartbeats int64
	}
	take := func() snap {
		// Right after the broker's count moved: it is sampled once a
		// second (sys_interval), which over a 10 s window would be an
		// error of up to 10%.
		sys.awaitUpdate(ctx)
		n, _ := produced()
		sn := snap{at: time.Now(), readings: n, brokerRx: sys.value(), heartbeats: heartbeats.Load()}
		for i, f := range s.fwds {
			sn.cpu += f.CPUTime()
			if v := testkit.Metric(s.fwdListen[i], "forwarder_confirmations_published_total"); v > 0 {
				sn.confirms += v
			}
		}
		return sn
	}
	a := take()
	if err := sleepCtx(ctx, o.duration); err != nil {
		stopSensors()
		return err
	}
	b := take()
	rep := fleetReport{Delivery: o.delivery, Devices: o.fleet, SensorsPerDevice: sensors, WindowS: b.at.Sub(a.at).Seconds()}
	if fr != nil {
		// What an operator types to change the interval on every device.
		at := time.Now()
		if err := fr.push(ctx, s, 2*fleetInterval); err != nil {
			stopSensors()
			return err
		}
		rep.ConfigPushS = time.Since(at).Seconds()
		took, n, err := fr.waitApplied(ctx, o.fleet, "1.0.0", []string{remote.StateTrial, remote.StateOK}, at, 60*time.Second)
		if err != nil {
			stopSensors()
			return err
		}
		rep.ConfigAppliedS, rep.ConfigApplied = took.Seconds(), n
		took, n, err = fr.waitApplied(ctx, o.fleet, "1.0.0", []string{remote.StateOK}, at, 60*time.Second)
		rep.ConfigWorkingS, rep.ConfigWorking = took.Seconds(), n
		if err != nil {
			stopSensors()
			return err
		}
		c := take()
		if err := sleepCtx(ctx, o.duration); err != nil {
			stopSensors()
			return err
		}
		d := take()
		rep.ReadingsPerSAfter = float64(d.readings-c.readings) / d.at.Sub(c.at).Seconds()
	}
	if o.fleetKill > 0 {
		var victims []string
		var hung []*simStatus
		for _, i := range slices.Concat(cutIdx, hungIdx) {
			victims = append(victims, devs[i].id)
		}
		for _, i := range hungIdx {
			hung = append(hung, devs[i].st)
		}
		slices.Sort(victims)
		k := s.killDevices(ctx, link, hung, victims, o.fleetHB, 3*o.fleetHB+30*time.Second)
		revive(link, hung)
		rep.Kill = &k
	}
	if fu != nil {
		u := fu.run(ctx, s, o.fleet)
		rep.Update = &u
	}
	stopSensors()
	sens.Wait()

	readings := float64(b.readings - a.readings)
	rep.ReadingsPerS = readings / rep.WindowS
	// mosquitto's $SYS count of PUBLISH received leaves retained ones
	// out: the heartbeats are counted where the devices send them.
	hb := float64(b.heartbeats - a.heartbeats)
	rep.BrokerMsgsPerS = (b.brokerRx - a.brokerRx + hb) / rep.WindowS
	rep.BrokerPerReading = (b.brokerRx - a.brokerRx + hb) / readings
	rep.ConfirmsPerS = (b.confirms - a.confirms) / rep.WindowS
	rep.HeartbeatsPerS = hb / rep.WindowS
	rep.OtherPerS = rep.BrokerMsgsPerS - rep.ReadingsPerS - rep.ConfirmsPerS - rep.HeartbeatsPerS
	rep.StatusIntervalS = o.fleetHB.Seconds()
	// The same window with the heartbeats at the agent's default interval
	// (one a minute per device) in place of the run's short one.
	rep.BrokerPerReadingDefaultHB = (b.brokerRx - a.brokerRx + float64(o.fleet)*rep.WindowS/status.DefaultInterval.Seconds()) / readings
	rep.FwdCPUPerReadingUS = float64((b.cpu - a.cpu).Microseconds()) / readings

	// Drain: every queue empties once the forwarders confirmed (kafka) or
	// the broker acknowledged (broker) what the sensors took.
	deadline := time.Now().Add(o.settle)
	for {
		_, held := produced()
		rep.HeldAtEnd = held
		if held == 0 || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	rep.Produced, _ = produced()
	stopPubs()
	wg.Wait()
	if err := s.waitTopicCount(ctx, rep.Produced, 60*time.Second); err != nil {
		s.log.Warn("topic count", "err", err)
	}
	recs, err := topicread.ReadAll(ctx, s.reader)
	if err != nil {
		return err
	}
	seen := map[string]map[uint64]bool{}
	for _, r := range recs {
		if r.Err != nil {
			continue
		}
		m := seen[r.Reading.DeviceID]
		if m == nil {
			m = map[uint64]bool{}
			seen[r.Reading.DeviceID] = m
		}
		if m[r.Reading.Seq] {
			rep.Duplicates++
			continue
		}
		m[r.Reading.Seq] = true
		rep.Delivered++
	}
	for _, d := range devs {
		n, _ := d.q.state()
		for seq := uint64(1); seq <= n; seq++ {
			if !seen[d.id][seq] {
				rep.Missing++
			}
		}
	}
	rep.Pass = rep.Missing == 0 && rep.Produced > 0
	if fr != nil {
		// Every device applied the push, and the rate about halved with
		// it (a loaded machine ticks the 1 s sensors late more than the
		// 2 s ones, hence the wide band).
		ratio := rep.ReadingsPerSAfter / rep.ReadingsPerS
		rep.Pass = rep.Pass && rep.ConfigWorking == o.fleet && ratio > 0.35 && ratio < 0.7
	}
	if k := rep.Kill; k != nil {
		// Within 3 status intervals of the kill, with a second for the
		// relay to the database and the poll.
		limit := (3*o.fleetHB + killSlack).Seconds()
		rep.Pass = rep.Pass && k.Err == "" && k.StatusS <= limit && (!k.DashboardDB || k.DashboardS <= limit)
	}
	if u := rep.Update; u != nil {
		rep.Pass = rep.Pass && u.Pass
	}
	rep.text(stdout)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if !rep.Pass {
		return fmt.Errorf("fleet: FAIL (%d readings missing)", rep.Missing)
	}
	return nil
}

func (r *fleetReport) text(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("==== sensorpipe fleet report (delivery=%s) ====", r.Delivery)
	p("devices       %d simulated devices in one process (the agent's mqttpub, in-memory queues), %d sensors each at 1 Hz", r.Devices, r.SensorsPerDevice)
	p("window        %.1fs of steady running: %.0f readings/s", r.WindowS, r.ReadingsPerS)
	p("broker        %.0f PUBLISH received/s = %.3f messages per reading: %.0f readings + %.0f confirmations + %.0f heartbeats + %.0f other (re-sends; $SYS sampling) per second",
		r.BrokerMsgsPerS, r.BrokerPerReading, r.ReadingsPerS, r.ConfirmsPerS, r.HeartbeatsPerS, r.OtherPerS)
	p("heartbeats    %.0f/s at status_interval %gs; with the default 60s: %.3f messages per reading", r.HeartbeatsPerS, r.StatusIntervalS, r.BrokerPerReadingDefaultHB)
	p("confirmations %.0f/s published by the forwarders", r.ConfirmsPerS)
	p("forwarders    %.1f us CPU per reading (user+system, both replicas)", r.FwdCPUPerReadingUS)
	if r.ConfigPushS > 0 {
		p("fleet config  `cloud-forwarder fleet config push --fleet` (interval 1s -> 2s) took %.2fs; %d devices applied it within %.2fs, %d stored a reading under it within %.2fs; %.0f readings/s after (%.0f before)",
			r.ConfigPushS, r.ConfigApplied, r.ConfigAppliedS, r.ConfigWorking, r.ConfigWorkingS, r.ReadingsPerSAfter, r.ReadingsPerS)
	}
	if k := r.Kill; k != nil {
		dash := "the Fleet dashboard's query: not checked (no database)"
		if k.DashboardDB {
			dash = fmt.Sprintf("the Fleet dashboard's \"Not reporting\" query within %.2fs", k.DashboardS)
		}
		p("killed        %d devices (%d connections dropped: the broker sent their will; %d hung: heartbeats and sensors stopped), status_interval %gs; "+
			"listed exactly as not reporting by `fleet status --json` (%s) within %.2fs, by %s (limit 3 intervals + %v)%s",
			len(k.Killed), k.Cut, k.Hung, k.IntervalS, k.StatusFrom, k.StatusS, dash, killSlack, map[bool]string{true: "; " + k.Err, false: ""}[k.Err != ""])
	}
	if u := r.Update; u != nil {
		u.text(w)
	}
	p("delivered     %d of %d readings in Kafka, %d missing, %d duplicates; %d still queued on devices at the end", r.Delivered, r.Produced, r.Missing, r.Duplicates, r.HeldAtEnd)
	if r.Pass {
		p("RESULT        PASS")
	} else {
		p("RESULT        FAIL")
	}
}

// sysCounter follows mosquitto's $SYS count of PUBLISH packets received.
type sysSub struct {
	c   mqtt.Client
	mu  sync.Mutex
	v   float64
	upd chan struct{} // closed and replaced on every update
}

// awaitUpdate returns after the broker's next $SYS update (or when ctx
// ends, or after 3 s without one).
func (ss *sysSub) awaitUpdate(ctx context.Context) {
	ss.mu.Lock()
	ch := ss.upd
	ss.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
}

func (s *stack) sysCounter(ctx context.Context) (*sysSub, error) {
	tlsCfg := s.certs.Client()
	ss := &sysSub{upd: make(chan struct{})}
	o := mqtt.NewClientOptions().AddBroker("ssl://" + s.mqtt).SetClientID("e2e-sys").SetUsername(sysUser).SetPassword(sysPass).
		SetTLSConfig(tlsCfg).SetCleanSession(true)
	ss.c = mqtt.NewClient(o)
	if t := ss.c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("$SYS reader connect: %v", t.Error())
	}
	const topic = "$SYS/broker/publish/messages/received"
	t := ss.c.Subscribe(topic, 0, func(_ mqtt.Client, m mqtt.Message) {
		v, err := strconv.ParseFloat(strings.TrimSpace(string(m.Payload())), 64)
		if err == nil {
			ss.mu.Lock()
			ss.v = v
			close(ss.upd)
			ss.upd = make(chan struct{})
			ss.mu.Unlock()
		}
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("$SYS subscribe: %v", t.Error())
	}
	// Wait for the first value (sys_interval 1).
	for range 50 {
		if ss.value() > 0 {
			return ss, nil
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no %s from the broker in 5s", topic)
}

func (ss *sysSub) value() float64 {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.v
}

func (ss *sysSub) close() { ss.c.Disconnect(100) }
