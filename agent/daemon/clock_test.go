package daemon_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// published records, in arrival order, what the broker received.
type published struct {
	mu   sync.Mutex
	rs   []reading.Reading
	bad  []string
	when []time.Time
}

func (p *published) add(_ string, payload []byte) {
	r, err := reading.Decode(payload)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.bad = append(p.bad, err.Error())
		return
	}
	p.rs = append(p.rs, r)
	p.when = append(p.when, time.Now())
}

func (p *published) snapshot() ([]reading.Reading, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]reading.Reading(nil), p.rs...), append([]string(nil), p.bad...)
}

// piClock is a Pi's clocks driven by the test: the time since boot runs
// with real time from boot+5s at the start, the wall clock is off by skew
// until NTP sets it.
type piClock struct {
	realStart time.Time
	trueBoot  time.Time // the true wall time at boot
	skew      atomic.Int64
	synced    atomic.Bool
}

func newPiClock() *piClock {
	now := time.Now().Round(0)
	p := &piClock{realStart: now, trueBoot: now.Add(-5 * time.Second)}
	p.skew.Store(int64(-72 * time.Hour))
	return p
}

func (p *piClock) since() time.Duration { return 5*time.Second + time.Since(p.realStart) }

func (p *piClock) options(id [16]byte) daemon.Options {
	return daemon.Options{
		Clock:           sourceFunc(func() (bool, error) { return p.synced.Load(), nil }),
		ClockCheckEvery: 50 * time.Millisecond,
		ClockOptions: []clock.Option{clock.WithBootID(id), clock.WithTime(
			func() time.Time { return p.trueBoot.Add(p.since() + time.Duration(p.skew.Load())) },
			p.since,
		)},
	}
}

// TestReadingsBeforeSyncArePublishedWithTrueTime is issue 13's integration
// test: the agent boots with the clock 3 days behind and the broker
// reachable. Readings taken before NTP are held in the buffer, not
// published; when the clock syncs they are corrected and published once
// each, with their true time, in seq order; also when the agent restarted
// before the sync (same boot). A reading of an earlier boot goes out at
// once, flagged, unchanged. A step back of the synced clock changes no
// seq order.
func TestReadingsBeforeSyncArePublishedWithTrueTime(t *testing.T) {
	for _, restart := range []bool{false, true} {
		name := "one run"
		if restart {
			name = "agent restarted before the sync"
		}
		t.Run(name, func(t *testing.T) {
			var pub published
			br := broker.New(t, broker.Options{Inline: pub.add, Filter: "sensors/+/+/reading"})
			dbPath := filepath.Join(t.TempDir(), "buffer.db")
			thisBoot := [16]byte{0x4f, 0x5d, 0x3c}

			// Left by an earlier boot that never synced.
			b, err := buffer.Open(dbPath, buffer.Options{})
			if err != nil {
				t.Fatal(err)
			}
			earlier := &reading.Reading{DeviceID: "pi-1", Sensor: "sim-1", Kind: "sim",
				TS: time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC), Values: map[string]float64{reading.Temperature: 1},
				Boot: reading.BootStamp{ID: [16]byte{0x11}, Since: time.Minute}}
			if err := b.Append(context.Background(), earlier); err != nil {
				t.Fatal(err)
			}
			st, _ := b.Stats()
			floor := st.SeqFloor
			b.Close()

			pi := newPiClock()
			cfg := parse(t, fmt.Sprintf(`device_id: pi-1
sensors: [{name: sim-1, driver: sim, interval: 50ms}, {name: sim-2, driver: sim, interval: 70ms}]
buffer: {path: %s}
mqtt: {url: %q, delivery: broker}
status_listen: 127.0.0.1:0
`, dbPath, br.URL()), nil)
			run, addr := startAgent(t, cfg, pi.options(thisBoot))

			// Unsynced: only the earlier boot's reading is published.
			testkit.WaitFor(t, "the earlier boot's reading", 10*time.Second, func() bool {
				rs, _ := pub.snapshot()
				return len(rs) > 0
			})
			// Its PUBACK processed (deleted), so that a restart does not
			// send it again: duplicates across a restart are allowed, but
			// this test counts the ones the correction could cause.
			testkit.WaitFor(t, "the earlier boot's reading deleted after its PUBACK", 10*time.Second, func() bool {
				for _, r := range export(t, addr) {
					if r.Seq == earlier.Seq {
						return false
					}
				}
				return true
			})
			time.Sleep(time.Second)
			if restart {
				run.stop(t)
				run, addr = startAgent(t, cfg, pi.options(thisBoot))
				time.Sleep(500 * time.Millisecond)
			}
			rs, bad := pub.snapshot()
			if len(rs) != 1 || rs[0].Seq != earlier.Seq || rs[0].TimeSynced || !rs[0].TS.Equal(earlier.TS) || len(bad) > 0 {
				t.Fatalf("published before the sync: %+v (bad: %v); want only the earlier boot's reading, as it was", rs, bad)
			}
			held := export(t, addr)
			if len(held) < 20 {
				t.Fatalf("%d readings held before the sync", len(held))
			}
			for _, r := range held {
				if r.TimeSynced || time.Since(r.TS) < 71*time.Hour {
					t.Fatalf("reading before the sync: %+v; want unsynced, 3 days behind", r)
				}
			}
			lastHeld := held[len(held)-1].Seq
			heldTS := map[uint64]time.Time{}
			for _, r := range held {
				heldTS[r.Seq] = r.TS
			}

			// NTP steps the clock 3 days forward and the kernel says synced.
			pi.skew.Store(0)
			pi.synced.Store(true)
			syncAt := time.Now()
			testkit.WaitFor(t, "every held reading published", 15*time.Second, func() bool {
				rs, _ := pub.snapshot()
				return len(rs) > 0 && rs[len(rs)-1].Seq >= lastHeld
			})
			// A step back after the sync: later readings take the new time.
			pi.skew.Store(int64(-time.Hour))
			stepAt := time.Now()
			time.Sleep(500 * time.Millisecond)
			run.stop(t)

			rs, bad = pub.snapshot()
			if len(bad) > 0 {
				t.Fatalf("undecodable payloads: %v", bad)
			}
			count := map[uint64]int{}
			var prev uint64
			for i, r := range rs {
				count[r.Seq]++
				if r.Seq <= prev {
					t.Fatalf("published seq %d after %d: order broken (index %d)", r.Seq, prev, i)
				}
				prev = r.Seq
				switch {
				case r.Seq == earlier.Seq:
				case r.Seq <= lastHeld:
					// Taken between the start and the sync: published at
					// its true time, the wall clock's 3 days added.
					if !r.TimeSynced || r.TS.Before(pi.realStart.Add(-time.Second)) || r.TS.After(syncAt.Add(time.Second)) {
						t.Fatalf("held seq %d published with ts %v synced %v; want its true time, between %v and %v",
							r.Seq, r.TS, r.TimeSynced, pi.realStart, syncAt)
					}
					if before, ok := heldTS[r.Seq]; ok {
						if d := r.TS.Sub(before) - 72*time.Hour; d < -time.Millisecond || d > time.Millisecond {
							t.Fatalf("held seq %d moved by %v, want 72h", r.Seq, r.TS.Sub(before))
						}
					}
				case !r.TimeSynced:
					t.Fatalf("seq %d taken after the sync is unsynced", r.Seq)
				}
			}
			for seq := floor + 1; seq <= lastHeld; seq++ {
				if count[seq] == 0 {
					t.Fatalf("seq %d, taken before the sync, was never published", seq)
				}
			}
			for seq, n := range count {
				if n != 1 {
					t.Fatalf("seq %d published %d times: the rewrite must not publish a reading twice", seq, n)
				}
			}
			// After the step back the clock's time is what readings carry.
			stepped := 0
			for _, r := range rs {
				if r.Seq > lastHeld && r.TS.Before(stepAt.Add(-30*time.Minute)) {
					stepped++
				}
			}
			if stepped == 0 {
				t.Fatal("no reading after the step back carries the stepped time")
			}
			t.Logf("%d readings held and corrected, %d published in all", lastHeld-earlier.Seq, len(rs))
		})
	}
}
