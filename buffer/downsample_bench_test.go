package buffer_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// BenchmarkDownsample is the cost of one downsampling pass: a buffer full
// of readings (4 BME280-like sensors at 1 Hz) gets the one append that
// takes it over max_bytes, timed from that append to the end of the pass
// it wakes the writer for (log checkpoint, the census walk, folding the
// oldest half into level-1 aggregates in transactions of 5,000; the
// append itself returns at once). Reported per MiB of live data the
// pass started from (MB/s is go test's, from SetBytes; ms/MiB is ours),
// and the stored sizes the coverage figures in docs/PERFORMANCE.md use.
//
//	flock /tmp/bench.lock go test -run '^$' -bench Downsample -benchtime 5x ./buffer/
func BenchmarkDownsample(b *testing.B) {
	for _, mib := range []int64{4, 16} {
		b.Run(fmt.Sprintf("live=%dMiB", mib), func(b *testing.B) {
			maxBytes := mib << 20
			// The template: a buffer filled to max_bytes with readings
			// (drop mode keeps it at exactly that, all raw).
			tmpl, _ := week(b, buffer.Drop, maxBytes, 4, time.Duration(maxBytes/4/150)*time.Second)
			st, err := tmpl.Stats()
			if err != nil {
				b.Fatal(err)
			}
			if err := tmpl.Close(); err != nil {
				b.Fatal(err)
			}
			src := tmpl.Path()
			var perReading, perAgg float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				path := filepath.Join(b.TempDir(), "buffer.db")
				copyFile(b, src, path)
				buf, err := buffer.Open(path, buffer.Options{MaxBytes: maxBytes, WhenFull: buffer.Downsample})
				if err != nil {
					b.Fatal(err)
				}
				r := &reading.Reading{DeviceID: "pi-greenhouse-1", Sensor: "bme280-0", Kind: "bme280",
					TS: st.NewestTS.Add(time.Second), TimeSynced: true,
					Values: map[string]float64{reading.Temperature: 21, reading.Humidity: 48, reading.Pressure: 1008.61}}
				b.StartTimer()
				if err := buf.Append(context.Background(), r); err != nil {
					b.Fatal(err)
				}
				buf.Settle() // the pass that append asked the writer for
				b.StopTimer()
				after, err := buf.Stats()
				if err != nil || after.Folded == 0 {
					b.Fatalf("no pass ran: %+v %v", after, err)
				}
				if i == 0 {
					perReading, perAgg = storedSizes(b, buf)
				}
				_ = buf.Close()
				b.StartTimer()
			}
			b.StopTimer()
			live := float64(st.LiveBytes) / (1 << 20)
			b.SetBytes(st.LiveBytes)
			b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N)/live, "ms/MiB")
			b.ReportMetric(perReading, "B/reading")
			b.ReportMetric(perAgg, "B/aggregate")
		})
	}
}

// storedSizes is the mean stored size (key, header, sensor name, payload:
// what max_bytes counts) of a reading and of an aggregate in buf.
func storedSizes(t testing.TB, buf *buffer.Buffer) (reading, aggregate float64) {
	t.Helper()
	var n, na, sum, suma float64
	err := buf.Each(context.Background(), 0, math.MaxUint64, func(_ uint64, p []byte) error {
		r, err := decode(p)
		if err != nil {
			return err
		}
		size := float64(8 + 15 + len(r.Sensor) + len(p)) // key, header, sensor name, payload
		if r.Agg != nil {
			na, suma = na+1, suma+size+1 // the level byte
		} else {
			n, sum = n+1, sum+size
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sum / max(n, 1), suma / max(na, 1)
}

func decode(p []byte) (reading.Reading, error) { return reading.Decode(p) }

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	for _, suffix := range []string{"", ".wal"} {
		in, err := os.Open(from + suffix)
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(to + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		_ = in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkCoverage256MiB simulates the default buffer (256 MiB) with 4
// sensors at 1 Hz and no broker for 30 days (the default max_age) in
// downsample mode, on an injected clock through the real buffer, and
// reports what is left: the days each level spans (raw-days, agg-days),
// the live MiB. It fails if a reading taken is neither kept nor counted in
// an aggregate, or if one was dropped. It takes about 2 minutes, so
// `make bench` runs it, not `make test`:
//
//	go test -run '^$' -bench Coverage256MiB -benchtime 1x -timeout 30m ./buffer/
func BenchmarkCoverage256MiB(b *testing.B) {
	const sensors, days = 4, 30
	for b.Loop() {
		start := time.Now()
		buf, seconds := week(b, buffer.Downsample, 256<<20, sensors, days*24*time.Hour)
		st, err := buf.Stats()
		if err != nil {
			b.Fatal(err)
		}
		type span struct {
			n        int
			from, to time.Time
		}
		levels := map[int]*span{}
		var accounted uint64
		for _, r := range drained(b, buf) {
			L, to, n := 0, r.TS, uint64(1)
			if r.Agg != nil {
				L, to, n = r.Agg.Level, r.Agg.To, r.Agg.N
			}
			accounted += n
			s := levels[L]
			if s == nil {
				s = &span{from: r.TS, to: to}
				levels[L] = s
			}
			s.n++
			if r.TS.Before(s.from) {
				s.from = r.TS
			}
			if to.After(s.to) {
				s.to = to
			}
		}
		taken := uint64(seconds * sensors)
		b.Logf("%d days, %d sensors at 1 Hz, 256 MiB: %d readings taken, %d accounted for, live %.1f MiB, folded %d, dropped %d (simulated in %v)",
			days, sensors, taken, accounted, float64(st.LiveBytes)/(1<<20), st.Folded, st.DroppedBytes, time.Since(start).Round(time.Second))
		if accounted != taken || st.DroppedBytes != 0 {
			b.Fatalf("readings taken %d, accounted for %d, dropped %d", taken, accounted, st.DroppedBytes)
		}
		var aggDays float64
		for L := 0; L <= buffer.FoldLevels; L++ {
			if s := levels[L]; s != nil {
				d := s.to.Sub(s.from).Hours() / 24
				b.Logf("level %d: %d records, %s .. %s (%.2f days)", L, s.n, s.from.Format(time.DateTime), s.to.Format(time.DateTime), d)
				if L > 0 {
					aggDays += d
				}
			}
		}
		if s := levels[0]; s != nil {
			b.ReportMetric(s.to.Sub(s.from).Hours()/24, "raw-days")
		}
		b.ReportMetric(aggDays, "agg-days")
		b.ReportMetric(float64(st.LiveBytes)/(1<<20), "live-MiB")
	}
}
