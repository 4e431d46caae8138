package sink

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// ErrColumn is wrapped by the errors of a reading that decodes but cannot
// be a row: PostgreSQL would refuse it, and the batch with it.
var ErrColumn = errors.New("reading does not fit the readings table")

// maxName bounds sensor and kind: they are in a btree index, whose entries
// PostgreSQL limits to about 2.7 kB.
const maxName = 256

// Source is where a record came from in Kafka, for log lines.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
}

func (s Source) String() string { return fmt.Sprintf("%s[%d]@%d", s.Topic, s.Partition, s.Offset) }

// row is one reading as the columns of the readings table.
type row struct {
	src        Source
	deviceID   string
	seq        int64
	sensor     string
	kind       string
	ts         time.Time
	timeSynced bool
	temp       any // float64, or nil for SQL NULL
	humidity   any
	pressure   any
	values     []byte // JSON object
}

// newRow checks r against the table's columns and builds its row.
func newRow(r *reading.Reading, src Source) (row, error) {
	if r.Seq > math.MaxInt64 {
		return row{}, fmt.Errorf("%w: seq %d does not fit a bigint", ErrColumn, r.Seq)
	}
	for _, f := range []struct{ name, v string }{{"device_id", r.DeviceID}, {"sensor", r.Sensor}, {"kind", r.Kind}} {
		if err := checkText(f.v); err != nil {
			return row{}, fmt.Errorf("%w: %s: %v", ErrColumn, f.name, err)
		}
	}
	for k := range r.Values {
		if strings.IndexByte(k, 0) >= 0 {
			return row{}, fmt.Errorf("%w: value key %q contains NUL, which jsonb refuses", ErrColumn, k)
		}
	}
	vals, err := json.Marshal(r.Values)
	if err != nil {
		return row{}, fmt.Errorf("%w: values: %v", ErrColumn, err)
	}
	return row{
		src: src, deviceID: r.DeviceID, seq: int64(r.Seq), sensor: r.Sensor, kind: r.Kind,
		ts: r.TS, timeSynced: r.TimeSynced,
		temp: value(r.Values, reading.Temperature), humidity: value(r.Values, reading.Humidity),
		pressure: value(r.Values, reading.Pressure), values: vals,
	}, nil
}

func checkText(s string) error {
	if len(s) > maxName {
		return fmt.Errorf("%d bytes, limit %d", len(s), maxName)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains NUL, which PostgreSQL text refuses")
	}
	return nil
}

func value(m map[string]float64, k string) any {
	if v, ok := m[k]; ok {
		return v
	}
	return nil
}

// columns are the readings columns the sink fills, in COPY order;
// received_at takes its default, the commit's now().
var columns = []string{"device_id", "seq", "sensor", "kind", "ts", "time_synced",
	"temperature_c", "humidity_pct", "pressure_hpa", "values"}

func (r *row) fields() []any {
	return []any{r.deviceID, r.seq, r.sensor, r.kind, r.ts, r.timeSynced, r.temp, r.humidity, r.pressure, r.values}
}
