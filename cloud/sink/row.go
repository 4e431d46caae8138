package sink

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
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
	temp       float64
	humidity   float64
	pressure   float64
	has        [3]bool // temp, humidity, pressure present (else SQL NULL)
	values     []byte  // JSON object
	// An aggregate's agg object and the seqs it covers; agg nil (SQL NULL
	// in all three columns) for a reading.
	agg                     []byte
	coversFirst, coversLast int64
}

// newRow checks r against the table's columns and builds its row. The
// values JSON is appended to arena (one buffer per batch, so a row costs no
// allocation of its own); it returns the extended arena.
func newRow(r *reading.Reading, src Source, arena []byte) (row, []byte, error) {
	if r.Seq > math.MaxInt64 {
		return row{}, arena, fmt.Errorf("%w: seq %d does not fit a bigint", ErrColumn, r.Seq)
	}
	for _, f := range []struct{ name, v string }{{"device_id", r.DeviceID}, {"sensor", r.Sensor}, {"kind", r.Kind}} {
		if err := checkText(f.v); err != nil {
			return row{}, arena, fmt.Errorf("%w: %s: %v", ErrColumn, f.name, err)
		}
	}
	for k := range r.Values {
		if strings.IndexByte(k, 0) >= 0 {
			return row{}, arena, fmt.Errorf("%w: value key %q contains NUL, which jsonb refuses", ErrColumn, k)
		}
	}
	rw := row{src: src, deviceID: r.DeviceID, seq: int64(r.Seq), sensor: r.Sensor, kind: r.Kind,
		ts: r.TS, timeSynced: r.TimeSynced}
	rw.temp, rw.has[0] = r.Values[reading.Temperature]
	rw.humidity, rw.has[1] = r.Values[reading.Humidity]
	rw.pressure, rw.has[2] = r.Values[reading.Pressure]
	start := len(arena)
	arena = appendValues(arena, r.Values)
	rw.values = arena[start:len(arena):len(arena)]
	if a := r.Agg; a != nil {
		if a.Covers[1] > math.MaxInt64 { // Decode bounds it by 2^53: unreachable
			return row{}, arena, fmt.Errorf("%w: covers %v do not fit a bigint", ErrColumn, a.Covers)
		}
		start = len(arena)
		arena = a.AppendJSON(arena)
		rw.agg = arena[start:len(arena):len(arena)]
		rw.coversFirst, rw.coversLast = int64(a.Covers[0]), int64(a.Covers[1])
	}
	return rw, arena, nil
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

// appendValues writes m as a JSON object with sorted keys.
func appendValues(dst []byte, m map[string]float64) []byte {
	var arr [8]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		dst = strconv.AppendFloat(dst, m[k], 'g', -1, 64) // finite: Decode checked
	}
	return append(dst, '}')
}

// appendJSONString quotes s (valid UTF-8, as Decode guarantees) for JSON.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// columns are the readings columns the sink fills, in COPY order;
// received_at takes its default, the commit's now().
var columns = []string{"device_id", "seq", "sensor", "kind", "ts", "time_synced",
	"temperature_c", "humidity_pct", "pressure_hpa", "values", "agg", "covers_first", "covers_last"}

// fields appends r's values in columns order to dst. They are pointers
// into r, which pgx reads without boxing a copy of each (a nil *float64 is
// NULL).
func (r *row) fields(dst []any) []any {
	dst = append(dst[:0], &r.deviceID, &r.seq, &r.sensor, &r.kind, &r.ts, &r.timeSynced,
		orNil(&r.temp, r.has[0]), orNil(&r.humidity, r.has[1]), orNil(&r.pressure, r.has[2]), &r.values)
	if r.agg == nil {
		return append(dst, nil, nil, nil)
	}
	return append(dst, &r.agg, &r.coversFirst, &r.coversLast)
}

func orNil(v *float64, ok bool) *float64 {
	if !ok {
		return nil
	}
	return v
}

// rowSource feeds rows to CopyFrom, reusing one []any for every row: pgx
// encodes each row before asking for the next.
type rowSource struct {
	rows []row
	i    int
	buf  []any
}

func (s *rowSource) Next() bool             { s.i++; return s.i <= len(s.rows) }
func (s *rowSource) Values() ([]any, error) { s.buf = s.rows[s.i-1].fields(s.buf); return s.buf, nil }
func (s *rowSource) Err() error             { return nil }
