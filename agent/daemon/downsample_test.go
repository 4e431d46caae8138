package daemon_test

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/daemon"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// TestDownsampledBacklogIsPublished: a Pi was offline for a day with 4
// sensors at 1 Hz and a 2 MiB buffer (when_full: downsample, the default),
// so its buffer holds aggregates of the oldest hours and the newest
// readings. When the broker is back, the running agent publishes all of
// it: what the broker receives covers the whole day for every sensor with
// no gap longer than the coarsest window, and the aggregates' counts add up
// to every reading taken.
func TestDownsampledBacklogIsPublished(t *testing.T) {
	const (
		sensors = 4
		day     = 24 * time.Hour
	)
	db := filepath.Join(t.TempDir(), "buffer.db")
	start := time.Now().Add(-day - time.Hour).UTC().Truncate(time.Second)
	b, err := buffer.Open(db, buffer.Options{MaxBytes: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	seconds := int(day / time.Second)
	batch := make([]*reading.Reading, 0, 600*sensors)
	for s := 0; s < seconds; s++ {
		for i := 0; i < sensors; i++ {
			batch = append(batch, &reading.Reading{DeviceID: "pi-ds", Sensor: fmt.Sprintf("bme280-%d", i), Kind: "bme280",
				TS: start.Add(time.Duration(s) * time.Second), TimeSynced: true,
				Values: map[string]float64{reading.Temperature: 20 + 5*math.Sin(float64(s)/5000), reading.Humidity: 50}})
		}
		if len(batch) == cap(batch) || s == seconds-1 {
			if err := b.Append(context.Background(), batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := b.Close(); err != nil { // finishes the pass the last append asked for
		t.Fatal(err)
	}
	if b, err = buffer.Open(db, buffer.Options{MaxBytes: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	st, err := b.Stats()
	if err != nil || st.Folded == 0 || st.DroppedBytes != 0 {
		t.Fatalf("offline day: %+v, %v; want readings folded and none dropped", st, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	got := map[uint64]reading.Reading{}
	br := broker.New(t, broker.Options{Filter: "sensors/pi-ds/+/reading", Inline: func(_ string, p []byte) {
		r, err := reading.Decode(p) // the forwarder's check
		if err != nil {
			t.Errorf("payload %s: %v", p, err)
			return
		}
		mu.Lock()
		got[r.Seq] = r
		mu.Unlock()
	}})
	cfg := parse(t, fmt.Sprintf(`device_id: pi-ds
sensors: [{name: sim-1, driver: sim, interval: 1h}]
buffer: {path: %s, max_bytes: 2MiB}
mqtt: {url: %q, delivery: broker}
status_listen: 127.0.0.1:0
`, db, br.URL()), nil)
	startAgent(t, cfg, daemon.Options{})
	backlog := func() (n uint64) {
		mu.Lock()
		defer mu.Unlock()
		for seq := range got {
			if seq <= st.LastSeq {
				n++
			}
		}
		return n
	}
	testkit.WaitFor(t, "the broker to receive the whole backlog", 60*time.Second, func() bool { return backlog() == st.Count })

	mu.Lock()
	defer mu.Unlock()
	coarsest := buffer.FoldWindow << (buffer.FoldLevels - 1)
	bySensor := map[string][]reading.Reading{}
	aggs := 0
	for seq, r := range got {
		if seq <= st.LastSeq {
			bySensor[r.Sensor] = append(bySensor[r.Sensor], r)
			if r.Agg != nil {
				aggs++
			}
		}
	}
	if len(bySensor) != sensors || aggs == 0 {
		t.Fatalf("received %d sensors, %d aggregates", len(bySensor), aggs)
	}
	for name, rs := range bySensor {
		sort.Slice(rs, func(i, j int) bool { return rs[i].TS.Before(rs[j].TS) })
		if !rs[0].TS.Equal(start) || !rs[len(rs)-1].TS.Equal(start.Add(time.Duration(seconds-1)*time.Second)) {
			t.Fatalf("%s: received %v .. %v, want the whole day from %v", name, rs[0].TS, rs[len(rs)-1].TS, start)
		}
		var n uint64
		for i, r := range rs {
			to := r.TS
			if r.Agg != nil {
				to, n = r.Agg.To, n+r.Agg.N
			} else {
				n++
			}
			if i+1 < len(rs) {
				if gap := rs[i+1].TS.Sub(to); gap <= 0 || gap > coarsest {
					t.Fatalf("%s: gap of %v after %v", name, gap, to)
				}
			}
		}
		if n != uint64(seconds) {
			t.Fatalf("%s: counts add up to %d, want %d readings taken", name, n, seconds)
		}
	}
	t.Logf("%d records published (%d aggregates) for %d readings taken", st.Count, aggs, seconds*sensors)
}
