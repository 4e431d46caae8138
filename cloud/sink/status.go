package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/kafkaout"
)

// The status topic (KAFKA_STATUS_TOPIC) carries every device's heartbeat,
// keyed by device_id, as the forwarder received it on
// {prefix}/{device_id}/status. The sink keeps the latest per device in
// devices and every one in device_status. It consumes the topic with a
// client and a consumer group of its own (SINK_GROUP + StatusGroupSuffix)
// and a database session of its own, so nothing on this path (a slow
// query, a malformed heartbeat, a missing topic) holds up the readings.

// StatusGroupSuffix is appended to SINK_GROUP to name the consumer group of
// the status topic.
const StatusGroupSuffix = ".status"

// HeaderRetained is the record header the forwarder sets to "true" on a
// heartbeat the broker delivered as a retained copy (at subscribe), not
// live: such a copy says nothing about when the device last spoke.
const HeaderRetained = kafkaout.HeaderRetained

// statusBatch is the most status records written per transaction.
const statusBatch = 500

// Reasons a status record is skipped (sink_status_skipped_total).
const (
	reasonStatusKey     = "key"     // no device_id, or not a usable one
	reasonStatusPayload = "payload" // not a heartbeat
)

// statusMetrics are the status path's series, in the sink's set.
type statusMetrics struct {
	records  *vm.Counter
	skipped  map[string]*vm.Counter
	dbErrors *vm.Counter
}

func (m *metrics) status() *statusMetrics {
	sm := &statusMetrics{
		records:  m.reg.Counter("sink_status_records_total", "Status-topic records stored in devices and device_status (and committed)."),
		skipped:  map[string]*vm.Counter{},
		dbErrors: m.reg.Counter("sink_status_db_errors_total", "Failed writes of heartbeats (each retried; the readings path is not affected)."),
	}
	v := m.reg.CounterVec("sink_status_skipped_total",
		"Status-topic records skipped: key (no usable device_id), payload (not a heartbeat), refused (PostgreSQL refused it).", "reason")
	for _, r := range []string{reasonStatusKey, reasonStatusPayload, reasonRefused} {
		sm.skipped[r] = v.With(r)
	}
	return sm
}

// statusRow is one heartbeat ready for the database.
type statusRow struct {
	device, state string
	status        []byte
	// heard is when the device spoke: the record's time for a live
	// heartbeat, the heartbeat's own ts for a retained copy (nil when it
	// has none: the time the device last spoke stays what it was).
	heard     *time.Time
	recorded  time.Time // the record's time
	partition int32
	offset    int64
}

// maxStatus is the largest heartbeat stored, as the agent's format allows.
const maxStatus = 64 << 10

// errStatus is wrapped by decodeStatus's errors.
var errStatus = errors.New("not a heartbeat")

// decodeStatus checks a status record: the key is a device id, the value a
// JSON object of at most 64 KiB with a numeric "v" and "state" online or
// offline, that PostgreSQL's jsonb takes (valid UTF-8, no \u0000). The rest
// of the heartbeat is stored as it is; the views read what they know of it.
func decodeStatus(rec *kgo.Record) (statusRow, string, error) {
	dev := string(rec.Key)
	if err := reading.CheckName(dev); err != nil {
		return statusRow{}, reasonStatusKey, fmt.Errorf("key: %w", err)
	}
	v := rec.Value
	switch {
	case len(v) > maxStatus:
		return statusRow{}, reasonStatusPayload, fmt.Errorf("%w: %d bytes, more than %d", errStatus, len(v), maxStatus)
	case !utf8.Valid(v):
		return statusRow{}, reasonStatusPayload, fmt.Errorf("%w: invalid UTF-8", errStatus)
	case bytes.Contains(v, []byte(`\u0000`)):
		return statusRow{}, reasonStatusPayload, fmt.Errorf("%w: a NUL character", errStatus)
	}
	var h map[string]any
	if err := json.Unmarshal(v, &h); err != nil {
		return statusRow{}, reasonStatusPayload, fmt.Errorf("%w: %w", errStatus, err)
	}
	if _, ok := h["v"].(float64); !ok {
		return statusRow{}, reasonStatusPayload, fmt.Errorf("%w: no numeric \"v\"", errStatus)
	}
	state, _ := h["state"].(string)
	if state != "online" && state != "offline" {
		return statusRow{}, reasonStatusPayload, fmt.Errorf("%w: state %q is not online or offline", errStatus, state)
	}
	r := statusRow{device: dev, state: state, status: v, recorded: rec.Timestamp, partition: rec.Partition, offset: rec.Offset}
	_, hasTS := h["ts"]
	ts, numTS := h["ts"].(float64)
	switch {
	case !retained(rec) && (hasTS || state == "online"):
		r.heard = &r.recorded
	case !retained(rec):
		// Offline with no ts: the agent's last will, built at connect and
		// sent by the broker when the connection ended. The broker spoke,
		// not the device: when it last spoke stays what it was, so a
		// device that vanished is not reporting 3 intervals after its
		// last heartbeat, not 3 after its will.
	case numTS && ts >= 946684800:
		// The device's clock (maybe unsynced): never later than the relay.
		t := time.Unix(int64(ts), 0)
		if t.After(rec.Timestamp) {
			t = rec.Timestamp
		}
		r.heard = &t
	}
	return r, "", nil
}

func retained(rec *kgo.Record) bool {
	for _, h := range rec.Headers {
		if h.Key == HeaderRetained {
			b, _ := strconv.ParseBool(string(h.Value))
			return b
		}
	}
	return false
}

// The statements of the status path. A device's row takes a record only
// if it is newer (a later offset of the same partition, or another
// partition after the topic was repartitioned), so a record consumed
// again after a rebalance never moves a device back; heard_at only moves
// forward.
const (
	upsertDevice = `INSERT INTO devices AS d (device_id, state, status, heard_at, kafka_partition, kafka_offset)
VALUES ($1, $2, $3, coalesce($4::timestamptz, $5::timestamptz), $6, $7)
ON CONFLICT (device_id) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status,
    heard_at = greatest(d.heard_at, coalesce($4::timestamptz, d.heard_at)),
    received_at = now(), kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset
WHERE d.kafka_partition <> EXCLUDED.kafka_partition OR d.kafka_offset < EXCLUDED.kafka_offset`
	insertStatus = `INSERT INTO device_status (device_id, heard_at, state, status, kafka_partition, kafka_offset)
VALUES ($1, coalesce($4::timestamptz, $5::timestamptz), $2, $3, $6, $7)
ON CONFLICT DO NOTHING`
)

// writeStatus stores rows in one transaction. A row PostgreSQL refuses as
// data (isDataError) is skipped through bad and the others are
// stored one by one; any other error is returned (and the batch retried).
func writeStatus(ctx context.Context, conn *pgx.Conn, rows []statusRow, bad func(statusRow, error)) error {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return queueStatus(ctx, tx, rows) })
	if !isDataError(err) {
		return err
	}
	for _, r := range rows {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return queueStatus(ctx, tx, []statusRow{r}) })
		switch {
		case isDataError(err):
			bad(r, err)
		case err != nil:
			return err
		}
	}
	return nil
}

func queueStatus(ctx context.Context, tx pgx.Tx, rows []statusRow) error {
	b := &pgx.Batch{}
	for _, r := range rows {
		args := []any{r.device, r.state, string(r.status), r.heard, r.recorded, r.partition, r.offset}
		b.Queue(insertStatus, args...)
		b.Queue(upsertDevice, args...)
	}
	return tx.SendBatch(ctx, b).Close()
}

// statusOptions are the status consumer's Kafka settings: the readings
// client's connection (TLS, SASL), its own group and topic, manual commits.
func (s *Sink) statusOptions() ([]kgo.Opt, error) {
	conn, err := s.kafkaConn()
	if err != nil {
		return nil, err
	}
	return append(conn,
		kgo.ClientID("cloud-forwarder-sink-status"),
		kgo.ConsumerGroup(s.cfg.Group+StatusGroupSuffix),
		kgo.ConsumeTopics(s.cfg.Kafka.StatusTopic),
		// Compacted: from the start is every device's latest heartbeat.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(2*time.Second),
		kgo.FetchMaxBytes(256<<10),
		kgo.FetchMaxWait(500*time.Millisecond),
	), nil
}

// runStatus consumes the status topic until ctx ends: each poll's
// heartbeats are stored, then their offsets committed. Database failures
// are retried with backoff on the status path's own session.
func (s *Sink) runStatus(ctx context.Context) {
	opts, err := s.statusOptions()
	if err == nil {
		var cl *kgo.Client
		if cl, err = kgo.NewClient(opts...); err == nil {
			// Polls block rebalances: Close alone would wait for one.
			defer cl.CloseAllowingRebalance()
			s.consumeStatus(ctx, cl)
			return
		}
	}
	s.log.Error("status topic not consumed", "topic", s.cfg.Kafka.StatusTopic, "err", err)
}

func (s *Sink) consumeStatus(ctx context.Context, cl *kgo.Client) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	fails := 0
	for ctx.Err() == nil {
		cl.AllowRebalance()
		fs := cl.PollRecords(ctx, statusBatch)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			s.log.Warn("kafka fetch error", "topic", t, "partition", p, "err", err)
		})
		recs := fs.Records()
		if len(recs) == 0 {
			continue
		}
		rows := make([]statusRow, 0, len(recs))
		for _, rec := range recs {
			r, reason, err := decodeStatus(rec)
			if err != nil {
				s.skipStatus(reason, rec.Topic, rec.Partition, rec.Offset, err)
				continue
			}
			rows = append(rows, r)
		}
		for {
			var err error
			if conn == nil || conn.IsClosed() {
				cctx, cancel := context.WithTimeout(ctx, s.connectTimeout)
				conn, err = pgx.ConnectConfig(cctx, s.dbCfg)
				cancel()
			}
			if err == nil {
				err = writeStatus(ctx, conn, rows, func(r statusRow, err error) {
					s.skipStatus(reasonRefused, s.cfg.Kafka.StatusTopic, r.partition, r.offset, err)
				})
			}
			if err == nil {
				break
			}
			if conn != nil {
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
			s.sm.dbErrors.Inc()
			fails++
			wait := min(250*time.Millisecond<<min(fails-1, 6), 10*time.Second)
			if fails == 1 || fails%10 == 0 {
				s.log.Warn("heartbeats not stored; retrying", "failures", fails, "retry_in", wait, "err", err)
			}
			if !sleep(ctx, wait) {
				return // not committed: consumed again by the next owner
			}
		}
		fails = 0
		if err := cl.CommitRecords(ctx, recs...); err != nil && ctx.Err() == nil {
			s.log.Warn("status offset commit failed; the heartbeats will be stored again (no change)", "err", err)
		}
		s.sm.records.Add(len(rows))
	}
}

func (s *Sink) skipStatus(reason, topic string, partition int32, offset int64, err error) {
	s.sm.skipped[reason].Inc()
	s.log.Warn("skipping a status record", "reason", reason, "topic", topic, "partition", partition, "offset", offset, "err", err)
}

// deleteStatusOlder deletes the heartbeats in device_status received
// before cutoff, batch rows per statement (devices keeps each device's
// latest whatever its age).
func deleteStatusOlder(ctx context.Context, conn *pgx.Conn, cutoff time.Time, batch int, pause time.Duration) (int64, error) {
	const q = `DELETE FROM device_status WHERE ctid = ANY (ARRAY(
		SELECT ctid FROM device_status WHERE received_at < $1 LIMIT $2))`
	var total int64
	for {
		tag, err := conn.Exec(ctx, q, cutoff, batch)
		if err != nil {
			return total, fmt.Errorf("status retention delete: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) || !sleep(ctx, pause) {
			return total, ctx.Err()
		}
	}
}
