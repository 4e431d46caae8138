package sink

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// TestAggregatesAreStoredAndAccountForTheirSeqs writes readings and an
// aggregate that replaced seqs 11..25 (one of them, 12, was published
// before the fold and arrives too): the aggregate's fields are stored, the
// gap view shows only the seqs nothing accounts for (26..29), and
// readings_folded names the reading that is also inside the aggregate (not
// the unsynced one, 14, which an aggregate never folds).
func TestAggregatesAreStoredAndAccountForTheirSeqs(t *testing.T) {
	conn, _ := migrated(t)
	w := newWriter(t, conn)
	ctx := context.Background()
	var rows []row
	for _, seq := range []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 31, 32, 33} {
		rows = append(rows, mustRow(t, sample("pi-agg", seq)))
	}
	unsynced := sample("pi-agg", 14) // taken before the clock synced: never folded, so not in readings_folded
	unsynced.TimeSynced = false
	rows = append(rows, mustRow(t, unsynced))
	agg := sample("pi-agg", 30)
	agg.TS = sample("pi-agg", 11).TS
	agg.Values = map[string]float64{reading.Temperature: 21.5, reading.Humidity: 48}
	agg.Agg = &reading.Aggregate{N: 15, Level: 1, To: agg.TS.Add(14 * time.Second), Covers: [2]uint64{11, 25},
		Min:   map[string]float64{reading.Temperature: 21, reading.Humidity: 47},
		Max:   map[string]float64{reading.Temperature: 22, reading.Humidity: 49},
		Count: map[string]uint64{reading.Humidity: 14}}
	// As the sink gets it: through the wire format.
	back, err := reading.Decode(reading.Encode(nil, agg))
	if err != nil {
		t.Fatal(err)
	}
	rows = append(rows, mustRow(t, &back))
	if res, err := w.write(ctx, rows, noBad(t)); err != nil || res.inserted != int64(len(rows)) {
		t.Fatalf("write = %+v, %v", res, err)
	}

	var (
		raw         []byte
		first, last *int64
		temp        float64
	)
	err = conn.QueryRow(ctx, `SELECT agg, covers_first, covers_last, temperature_c FROM readings WHERE device_id = 'pi-agg' AND seq = 30`).
		Scan(&raw, &first, &last, &temp)
	if err != nil {
		t.Fatal(err)
	}
	var stored struct {
		N      uint64             `json:"n"`
		Level  int                `json:"level"`
		To     time.Time          `json:"to"`
		Covers []uint64           `json:"covers"`
		Min    map[string]float64 `json:"min"`
		Count  map[string]uint64  `json:"count"`
	}
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatalf("agg column %s: %v", raw, err)
	}
	if stored.N != 15 || stored.Level != 1 || !stored.To.Equal(agg.Agg.To) || stored.Min[reading.Temperature] != 21 ||
		stored.Count[reading.Humidity] != 14 || first == nil || *first != 11 || last == nil || *last != 25 || temp != 21.5 {
		t.Fatalf("stored agg %s covers %v..%v temperature %v", raw, first, last, temp)
	}
	var nulls int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM readings WHERE device_id = 'pi-agg' AND agg IS NULL AND covers_first IS NULL`).Scan(&nulls); err != nil || nulls != len(rows)-1 {
		t.Fatalf("%d readings without agg (%v), want %d", nulls, err, len(rows)-1)
	}

	gaps, err := conn.Query(ctx, `SELECT first_missing, last_missing, missing FROM device_gaps WHERE device_id = 'pi-agg' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var got [][3]int64
	for gaps.Next() {
		var g [3]int64
		if err := gaps.Scan(&g[0], &g[1], &g[2]); err != nil {
			t.Fatal(err)
		}
		got = append(got, g)
	}
	if gaps.Err() != nil || len(got) != 1 || got[0] != [3]int64{26, 29, 4} {
		t.Fatalf("device_gaps = %v (%v), want only 26..29 (4): 11..25 are folded into seq 30", got, gaps.Err())
	}
	var seq, into int64
	if err := conn.QueryRow(ctx, `SELECT seq, folded_into FROM readings_folded WHERE device_id = 'pi-agg'`).Scan(&seq, &into); err != nil || seq != 12 || into != 30 {
		t.Fatalf("readings_folded: seq %d into %d (%v), want 12 into 30", seq, into, err)
	}
	var n int64
	if err := conn.QueryRow(ctx, `SELECT sum(readings) FROM readings_per_minute WHERE device_id = 'pi-agg'`).Scan(&n); err != nil || n != int64(len(rows)-1+15) {
		t.Fatalf("readings_per_minute counts %d (%v), want %d (an aggregate counts as its n)", n, err, len(rows)-1+15)
	}
}
