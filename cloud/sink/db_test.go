package sink

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/sink/schema"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
)

var pg pgcluster.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	pg.Close()
	os.Exit(code)
}

// migrated returns a connection to a fresh, migrated database and its URL.
func migrated(t *testing.T) (*pgx.Conn, string) {
	t.Helper()
	url := pg.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, _, err := schema.Migrate(ctx, conn, nil); err != nil {
		t.Fatal(err)
	}
	return conn, url
}

func sample(dev string, seq uint64) *reading.Reading {
	return &reading.Reading{
		DeviceID: dev, Seq: seq, Sensor: "bme280-0x76", Kind: "bme280",
		TS:         time.Date(2026, 11, 25, 10, 15, 2, 125e6, time.UTC).Add(time.Duration(seq) * time.Second),
		TimeSynced: true,
		Values:     map[string]float64{reading.Temperature: 21.43, reading.Humidity: 48.2, "co2_ppm": 415},
	}
}

func mustRow(t *testing.T, r *reading.Reading) row {
	t.Helper()
	rw, _, err := newRow(r, Source{Topic: "sensor-readings", Partition: 1, Offset: int64(r.Seq)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rw
}

func newWriter(t *testing.T, conn *pgx.Conn) *writer {
	t.Helper()
	w := &writer{conn: conn}
	if err := w.prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

func noBad(t *testing.T) func(row, error) {
	return func(r row, err error) { t.Errorf("row %s refused: %v", r.src, err) }
}

// TestWriteStoresEveryColumn writes one reading and reads every column back.
func TestWriteStoresEveryColumn(t *testing.T) {
	conn, _ := migrated(t)
	w := newWriter(t, conn)
	ctx := context.Background()
	r := sample("pi-greenhouse-1", 48213)
	r.TimeSynced = false
	res, err := w.write(ctx, []row{mustRow(t, r)}, noBad(t))
	if err != nil || res.inserted != 1 {
		t.Fatalf("write = %+v, %v", res, err)
	}
	var (
		dev, sensor, kind string
		seq               int64
		ts, recv          time.Time
		synced            bool
		temp, hum, press  *float64
		vals              map[string]float64
	)
	err = conn.QueryRow(ctx, `SELECT device_id, seq, sensor, kind, ts, time_synced, temperature_c, humidity_pct,
		pressure_hpa, "values", received_at FROM readings`).Scan(&dev, &seq, &sensor, &kind, &ts, &synced, &temp, &hum, &press, &vals, &recv)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case dev != r.DeviceID || seq != 48213 || sensor != r.Sensor || kind != r.Kind:
		t.Errorf("names: %s %d %s %s", dev, seq, sensor, kind)
	case !ts.Equal(r.TS) || synced:
		t.Errorf("ts %v synced %v, want %v false", ts, synced, r.TS)
	case temp == nil || *temp != 21.43 || hum == nil || *hum != 48.2:
		t.Errorf("temperature %v humidity %v", temp, hum)
	case press != nil:
		t.Errorf("pressure %v, want NULL (the reading has none)", *press)
	case len(vals) != 3 || vals["co2_ppm"] != 415:
		t.Errorf("values %v, want all three keys", vals)
	case time.Since(recv) > time.Minute:
		t.Errorf("received_at %v", recv)
	}
}

// TestWriteDropsDuplicates writes overlapping batches, and a batch holding
// the same reading twice: each (device_id, seq) is one row.
func TestWriteDropsDuplicates(t *testing.T) {
	conn, _ := migrated(t)
	w := newWriter(t, conn)
	ctx := context.Background()
	batch := func(from, to uint64, twice bool) []row {
		var rs []row
		for s := from; s <= to; s++ {
			rs = append(rs, mustRow(t, sample("pi-a", s)), mustRow(t, sample("pi-b", s)))
			if twice {
				rs = append(rs, mustRow(t, sample("pi-a", s)))
			}
		}
		return rs
	}
	tests := []struct {
		from, to       uint64
		twice          bool
		inserted, dups int64
	}{
		{1, 100, false, 200, 0},
		{51, 150, false, 100, 100},
		{140, 160, true, 20, 22 + 21},
	}
	for _, tc := range tests {
		res, err := w.write(ctx, batch(tc.from, tc.to, tc.twice), noBad(t))
		if err != nil || res.inserted != tc.inserted || res.dups != tc.dups {
			t.Errorf("seqs %d..%d: %+v, %v; want %d new, %d duplicates", tc.from, tc.to, res, err, tc.inserted, tc.dups)
		}
	}
	var n, distinct int
	if err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != 320 || distinct != 320 {
		t.Fatalf("%d rows, %d distinct; want 320", n, distinct)
	}
}

// TestWriteSkipsOnlyTheRefusedRows makes PostgreSQL refuse some rows (a
// CHECK constraint stands in for any column it would refuse): they are
// reported one by one, and every other row of the batch is written.
func TestWriteSkipsOnlyTheRefusedRows(t *testing.T) {
	conn, _ := migrated(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "ALTER TABLE readings ADD CONSTRAINT test_refuse CHECK (sensor <> 'refused')"); err != nil {
		t.Fatal(err)
	}
	w := newWriter(t, conn)
	var rows []row
	badSeqs := map[uint64]bool{7: true, 8: true, 500: true, 999: true}
	for s := uint64(1); s <= 1000; s++ {
		r := sample("pi-a", s)
		if badSeqs[s] {
			r.Sensor = "refused"
		}
		rows = append(rows, mustRow(t, r))
	}
	var refused []int64
	res, err := w.write(ctx, rows, func(r row, err error) {
		refused = append(refused, r.src.Offset)
		if !strings.Contains(err.Error(), "test_refuse") {
			t.Errorf("refusal of %s: %v", r.src, err)
		}
	})
	if err != nil || res.inserted != 996 {
		t.Fatalf("write = %+v, %v; want 996 new", res, err)
	}
	if len(refused) != len(badSeqs) {
		t.Fatalf("refused offsets %v, want the seqs %v", refused, badSeqs)
	}
	for _, o := range refused {
		if !badSeqs[uint64(o)] {
			t.Errorf("offset %d refused, but it was good", o)
		}
	}
}

// TestWriteReturnsConnectionErrors: a lost connection is not a data error;
// the batch comes back to the caller whole, and nothing is reported bad.
func TestWriteReturnsConnectionErrors(t *testing.T) {
	conn, _ := migrated(t)
	w := newWriter(t, conn)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pg_backend_pid())"); err == nil {
		t.Fatal("the backend survived its termination")
	}
	_, err := w.write(ctx, []row{mustRow(t, sample("pi-a", 1)), mustRow(t, sample("pi-a", 2))}, noBad(t))
	if err == nil || isDataError(err) {
		t.Fatalf("write on a dead connection = %v; want a non-data error", err)
	}
}

func TestNewRowRefusesWhatTheTableCannotHold(t *testing.T) {
	tests := []struct {
		name string
		edit func(*reading.Reading)
	}{
		{"seq beyond bigint", func(r *reading.Reading) { r.Seq = math.MaxInt64 + 1 }},
		{"NUL in sensor", func(r *reading.Reading) { r.Sensor = "a\x00b" }},
		{"NUL in kind", func(r *reading.Reading) { r.Kind = "\x00" }},
		{"sensor too long for the index", func(r *reading.Reading) { r.Sensor = strings.Repeat("s", maxName+1) }},
		{"NUL in a value key", func(r *reading.Reading) { r.Values["a\x00"] = 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := sample("pi-a", 1)
			tc.edit(r)
			if _, _, err := newRow(r, Source{}, nil); !errors.Is(err, ErrColumn) {
				t.Fatalf("newRow = %v, want ErrColumn", err)
			}
		})
	}
	if _, _, err := newRow(sample("pi-a", math.MaxInt64), Source{}, nil); err != nil {
		t.Fatalf("the largest bigint seq: %v", err)
	}
}

// TestAppendValuesIsJSON checks the hand-written values encoder against
// encoding/json on keys that need escaping and numbers of every shape.
func TestAppendValuesIsJSON(t *testing.T) {
	tests := []map[string]float64{
		{reading.Temperature: 21.43, reading.Humidity: 48.2, reading.Pressure: 1008.61},
		{"a\"b": 1, "back\\slash": -0.5, "tab\tnew\nline": 1e-7, "é ü 中": 1e21, "\x01": 0, "big": -1.7976931348623157e308},
		{"one": 5e-324},
	}
	for _, m := range tests {
		b := appendValues(nil, m)
		var got map[string]float64
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !maps.Equal(got, m) {
			t.Errorf("%s decodes to %v, want %v", b, got, m)
		}
	}
}

// TestRetentionDeletesOnlyRowsOldOnBothClocks: rows taken and received
// before the cutoff go, in batches; a reading taken long ago but received
// recently (a backlog, a wrong clock) stays, and so do recent ones.
func TestRetentionDeletesOnlyRowsOldOnBothClocks(t *testing.T) {
	conn, _ := migrated(t)
	w := newWriter(t, conn)
	ctx := context.Background()
	var rows []row
	for s := uint64(1); s <= 100; s++ {
		r := sample("pi-a", s)
		r.TS = time.Now().Add(-48 * time.Hour)
		if s > 90 {
			r.TS = time.Now()
		}
		rows = append(rows, mustRow(t, r))
	}
	if _, err := w.write(ctx, rows, noBad(t)); err != nil {
		t.Fatal(err)
	}
	// Seqs 1..80 were received two days ago; 81..90 (old ts) just now.
	if _, err := conn.Exec(ctx, "UPDATE readings SET received_at = now() - interval '48 hours' WHERE seq <= 80"); err != nil {
		t.Fatal(err)
	}
	n, err := deleteOlder(ctx, conn, time.Now().Add(-24*time.Hour), 7, time.Millisecond)
	if err != nil || n != 80 {
		t.Fatalf("deleteOlder = %d, %v; want 80 rows", n, err)
	}
	var left, first int
	if err := conn.QueryRow(ctx, "SELECT count(*), min(seq) FROM readings").Scan(&left, &first); err != nil {
		t.Fatal(err)
	}
	if left != 20 || first != 81 {
		t.Fatalf("%d rows left from seq %d; want 20 from 81", left, first)
	}
}
