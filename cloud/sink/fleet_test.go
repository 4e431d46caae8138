package sink

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

const fleetDashboard = "../../docs/dashboards/grafana/dashboards/fleet.json"

// fleetRecords are the heartbeats of testdata/fleet.json as status-topic
// records, each stamped age_s seconds ago: one device per case the
// dashboard shows (silent, silent with a 10 s interval, backlog, unsynced
// clock, failing sensor, hot, under-volted, offline) plus one whose fields
// have the wrong JSON types.
func fleetRecords(t *testing.T) []*kgo.Record {
	t.Helper()
	b, err := os.ReadFile("testdata/fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var fs []struct {
		Device   string          `json:"device"`
		AgeS     int             `json:"age_s"`
		Retained bool            `json:"retained"`
		Status   json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal(b, &fs); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var recs []*kgo.Record
	for i, f := range fs {
		rec := &kgo.Record{Topic: stack.StatusTopic, Key: []byte(f.Device), Value: f.Status,
			Timestamp: now.Add(-time.Duration(f.AgeS) * time.Second), Offset: int64(i)}
		if f.Retained {
			rec.Headers = []kgo.RecordHeader{{Key: HeaderRetained, Value: []byte("true")}}
		}
		recs = append(recs, rec)
	}
	return recs
}

func fleetData(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var rows []statusRow
	for _, rec := range fleetRecords(t) {
		r, _, err := decodeStatus(rec)
		if err != nil {
			t.Fatalf("%s: %v", rec.Key, err)
		}
		rows = append(rows, r)
	}
	if err := writeStatus(context.Background(), conn, rows, noBadStatus(t)); err != nil {
		t.Fatal(err)
	}
}

func noBadStatus(t *testing.T) func(statusRow, error) {
	return func(r statusRow, err error) { t.Errorf("heartbeat of %s refused: %v", r.device, err) }
}

// column returns the first column of q's rows, as text.
func column(t *testing.T, conn *pgx.Conn, q string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var v any
		if err := r.Scan(&v); err != nil {
			return "", err
		}
		b, _ := json.Marshal(v)
		return strings.Trim(string(b), `"`), nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	return out
}

// TestFleetViews asserts what each fleet view shows for the fixture
// heartbeats.
func TestFleetViews(t *testing.T) {
	conn, _ := migrated(t)
	fleetData(t, conn)
	for _, tc := range []struct {
		name, q string
		want    []string
	}{
		// pi-fast-silent is 45 s silent with a 10 s interval: not
		// reporting, though 45 s is under 3 default intervals.
		{"not reporting", "SELECT device_id FROM devices_not_reporting ORDER BY silent_for DESC", []string{"pi-silent", "pi-fast-silent"}},
		{"versions", "SELECT agent_version || '=' || devices || '/' || online FROM fleet_versions ORDER BY 1",
			[]string{"1.3.2=2/0", "1.4.0=7/6", "1.5.0-rc1=1/1"}},
		{"largest backlogs", "SELECT device_id FROM device_backlogs ORDER BY buffer_readings DESC NULLS LAST LIMIT 2", []string{"pi-backlog", "pi-silent"}},
		{"oldest backlogs", "SELECT device_id FROM device_backlogs WHERE oldest_age_s IS NOT NULL ORDER BY oldest_age_s DESC LIMIT 3",
			[]string{"pi-backlog", "pi-silent", "pi-unsynced"}},
		{"backlog drops", "SELECT drops FROM device_backlogs WHERE device_id = 'pi-backlog'", []string{"310"}},
		{"unsynced clocks", "SELECT device_id FROM devices_unsynced_clock", []string{"pi-unsynced"}},
		{"held", "SELECT held FROM devices_unsynced_clock", []string{"120"}},
		{"failing sensors", "SELECT device_id || '/' || sensor || ' ' || fails || ' ' || err_class FROM failing_sensors",
			[]string{"pi-failing/ds18b20-1 4 crc"}},
		{"failing since", "SELECT err_at = to_timestamp(1764988790) AND last_good = to_timestamp(1764988000) FROM failing_sensors", []string{"true"}},
		{"hot or throttled", "SELECT device_id FROM devices_hot_or_throttled ORDER BY device_id", []string{"pi-hot", "pi-undervolt"}},
		{"failing count", "SELECT device_id FROM fleet_devices WHERE failing_sensors > 0", []string{"pi-failing"}},
		{"interval", "SELECT interval_s FROM fleet_devices WHERE device_id IN ('pi-fast-silent', 'pi-unsynced', 'pi-odd') ORDER BY device_id",
			[]string{"10", "60", "60"}},
		// Fields of the wrong JSON type read as NULL; the device is still listed.
		{"odd fields", `SELECT concat_ws(',', clock_synced, buffer_readings, cpu_temp_c, cardinality(throttle_now), failing_sensors, drops)
			FROM fleet_devices WHERE device_id = 'pi-odd'`, []string{"0,0,0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := column(t, conn, tc.q); !slices.Equal(got, tc.want) {
				t.Errorf("%s\n got %q\nwant %q", tc.q, got, tc.want)
			}
		})
	}
}

// TestFleetDashboardQueries runs every SQL statement of the Fleet dashboard
// and the guide's fleet questions, as the guide's read-only role with the
// fleet grants, on the fixture heartbeats: each must run and return rows.
func TestFleetDashboardQueries(t *testing.T) {
	conn, dbURL := migrated(t)
	fleetData(t, conn)
	ctx := context.Background()
	for _, info := range []string{"sql setup", "sql fleet-setup"} {
		blocks := sqlBlocks(t, metabaseGuide, info)
		if len(blocks) != 1 {
			t.Fatalf("%s: %d ```%s blocks, want 1", metabaseGuide, len(blocks), info)
		}
		for _, stmt := range strings.SplitAfter(blocks[0], ";\n") {
			// Roles belong to the cluster: TestDashboardQueries may have
			// made it already.
			var pe *pgconn.PgError
			if _, err := conn.Exec(ctx, stmt); err != nil && !(errors.As(err, &pe) && pe.Code == "42710") {
				t.Fatalf("%s: %v\n%s", info, err, stmt)
			}
		}
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("dashboards", "change-me")
	ro, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close(ctx)

	grafana, uid := grafanaQueriesOf(t, fleetDashboard)
	if _, readingsUID := grafanaQueries(t); uid != readingsUID {
		t.Errorf("the Fleet dashboard uses datasource %q, the readings dashboard (and the provisioning) %q", uid, readingsUID)
	}
	everyQueryReturnsRows(t, ro, grafana, 9, fleetDashboard, "sql fleet", 6)
}

func TestDecodeStatus(t *testing.T) {
	at := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	rec := func(key, value string, retained bool) *kgo.Record {
		r := &kgo.Record{Key: []byte(key), Value: []byte(value), Timestamp: at}
		if retained {
			r.Headers = []kgo.RecordHeader{{Key: "forwarder_id", Value: []byte("fwd-a")}, {Key: HeaderRetained, Value: []byte("true")}}
		}
		return r
	}
	ts := func(d time.Duration) *time.Time { x := at.Add(d); return &x }
	for _, tc := range []struct {
		name   string
		rec    *kgo.Record
		reason string
		heard  *time.Time
	}{
		{"live", rec("pi-1", `{"v":2,"state":"online","ts":1}`, false), "", ts(0)},
		{"v1", rec("pi-1", `{"v":1,"state":"offline","delivery":"kafka","ts":"2026-12-06T03:00:00Z"}`, false), "", ts(0)},
		// The will is built at connect and has no ts: the broker speaks, not the device.
		{"live will", rec("pi-1", `{"v":2,"state":"offline","status_interval":10}`, false), "", nil},
		{"live without ts", rec("pi-1", `{"v":2,"state":"online"}`, false), "", ts(0)},
		{"retained with ts", rec("pi-1", `{"v":2,"state":"online","ts":`+jsonInt(at.Add(-time.Hour).Unix())+`}`, true), "", ts(-time.Hour)},
		{"retained from the future", rec("pi-1", `{"v":2,"state":"online","ts":`+jsonInt(at.Add(time.Hour).Unix())+`}`, true), "", ts(0)},
		{"retained will", rec("pi-1", `{"v":2,"state":"offline"}`, true), "", nil},
		{"retained unsynced clock", rec("pi-1", `{"v":2,"state":"online","ts":3600}`, true), "", nil},
		{"no key", rec("", `{"v":2,"state":"online"}`, false), reasonStatusKey, nil},
		{"key with slash", rec("pi/1", `{"v":2,"state":"online"}`, false), reasonStatusKey, nil},
		{"not json", rec("pi-1", `{"v":2,`, false), reasonStatusPayload, nil},
		{"array", rec("pi-1", `[1]`, false), reasonStatusPayload, nil},
		{"no v", rec("pi-1", `{"state":"online"}`, false), reasonStatusPayload, nil},
		{"v text", rec("pi-1", `{"v":"2","state":"online"}`, false), reasonStatusPayload, nil},
		{"bad state", rec("pi-1", `{"v":2,"state":"dancing"}`, false), reasonStatusPayload, nil},
		{"huge number", rec("pi-1", `{"v":2,"state":"online","uptime":1e400}`, false), reasonStatusPayload, nil},
		{"NUL", rec("pi-1", `{"v":2,"state":"online","agent":"a\u0000"}`, false), reasonStatusPayload, nil},
		{"invalid UTF-8", rec("pi-1", "{\"v\":2,\"state\":\"online\",\"agent\":\"\xff\"}", false), reasonStatusPayload, nil},
		{"too large", rec("pi-1", `{"v":2,"state":"online","agent":"`+strings.Repeat("x", 64<<10)+`"}`, false), reasonStatusPayload, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, reason, err := decodeStatus(tc.rec)
			if reason != tc.reason || (err != nil) != (tc.reason != "") {
				t.Fatalf("reason %q, err %v; want reason %q", reason, err, tc.reason)
			}
			if err != nil {
				return
			}
			if (r.heard == nil) != (tc.heard == nil) || (r.heard != nil && !r.heard.Equal(*tc.heard)) {
				t.Errorf("heard %v, want %v", r.heard, tc.heard)
			}
			if r.device != "pi-1" || !r.recorded.Equal(at) {
				t.Errorf("row %+v", r)
			}
		})
	}
}

// TestStatusWriteOrder: a record consumed again (an older offset after a
// rebalance) never moves a device back, a retained copy never moves its
// last word forward past the heartbeat's own time, nor does a will, and a
// record stored twice is one history row.
func TestStatusWriteOrder(t *testing.T) {
	conn, _ := migrated(t)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	row := func(offset int64, state string, age time.Duration, retained bool, ts int64) statusRow {
		v := `{"v":2,"state":"` + state + `"}`
		if ts != 0 {
			v = `{"v":2,"state":"` + state + `","ts":` + jsonInt(ts) + `}`
		}
		rec := &kgo.Record{Key: []byte("pi-1"), Value: []byte(v), Timestamp: now.Add(-age), Offset: offset, Partition: 1}
		if retained {
			rec.Headers = []kgo.RecordHeader{{Key: HeaderRetained, Value: []byte("true")}}
		}
		r, _, err := decodeStatus(rec)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	check := func(step, state string, heard time.Time, history int) {
		t.Helper()
		var gotState string
		var gotHeard time.Time
		var n int
		if err := conn.QueryRow(ctx, "SELECT state, heard_at, (SELECT count(*) FROM device_status) FROM devices WHERE device_id = 'pi-1'").Scan(&gotState, &gotHeard, &n); err != nil {
			t.Fatal(err)
		}
		if gotState != state || !gotHeard.Equal(heard) || n != history {
			t.Errorf("%s: state %s heard %v history %d; want %s %v %d", step, gotState, gotHeard, n, state, heard, history)
		}
	}
	write := func(rs ...statusRow) {
		t.Helper()
		if err := writeStatus(ctx, conn, rs, noBadStatus(t)); err != nil {
			t.Fatal(err)
		}
	}
	write(row(5, "online", time.Minute, false, 0))
	check("first", "online", now.Add(-time.Minute), 1)
	write(row(3, "offline", 0, false, 0))
	check("older offset again", "online", now.Add(-time.Minute), 2)
	write(row(5, "online", time.Minute, false, 0))
	check("same record again", "online", now.Add(-time.Minute), 2)
	// The broker hands a new forwarder the retained will: the state
	// changes, the last word stays.
	write(row(6, "offline", 0, true, 0))
	check("retained will", "offline", now.Add(-time.Minute), 3)
	write(row(7, "online", 0, true, now.Add(-2*time.Minute).Unix()))
	check("retained older heartbeat", "online", now.Add(-time.Minute), 4)
	write(row(8, "online", 30*time.Second, false, now.Add(-30*time.Second).Unix()))
	check("live", "online", now.Add(-30*time.Second), 5)
	// The broker sends the live will when the connection ends: the state
	// changes, the last word stays the device's own.
	write(row(9, "offline", 0, false, 0))
	check("live will", "offline", now.Add(-30*time.Second), 6)
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestStatusRetention deletes old heartbeats from the history, never a
// device's latest.
func TestStatusRetention(t *testing.T) {
	conn, _ := migrated(t)
	fleetData(t, conn)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "UPDATE device_status SET received_at = now() - interval '10 days' WHERE device_id LIKE 'pi-s%'"); err != nil {
		t.Fatal(err)
	}
	n, err := deleteStatusOlder(ctx, conn, time.Now().Add(-24*time.Hour), 1, 0)
	if err != nil || n != 1 {
		t.Fatalf("deleted %d (%v), want 1 (pi-silent's)", n, err)
	}
	if got := column(t, conn, "SELECT count(*) FROM devices"); !slices.Equal(got, []string{"10"}) {
		t.Errorf("devices: %v rows, want 10", got)
	}
}

// TestSinkStoresHeartbeats runs the sink on kfake (TLS, SASL) with
// heartbeats on the status topic next to readings: the devices table gets
// each device's latest, a malformed heartbeat is counted and skipped, and
// the readings are all stored.
func TestSinkStoresHeartbeats(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	_, url := migrated(t)
	keys, vals := encoded([]string{"pi-1", "pi-2"}, 1, 50)
	k.Produce(t, stack.Topic, keys, vals...)
	k.Produce(t, stack.StatusTopic, []string{"pi-1", "pi-2", "pi-2", "pi-3", "pi-1"},
		[]byte(`{"v":2,"state":"online","agent":"1.4.0"}`),
		[]byte(`{"v":2,"state":"online","agent":"1.3.0"}`),
		[]byte(`{"v":2,"state":"offline","agent":"1.3.0"}`),
		[]byte(`{not a heartbeat`),
		[]byte(`{"v":2,"state":"online","agent":"1.4.1"}`))
	r := startSink(t, sinkEnv(k, certs, url))
	testkit.WaitFor(t, "heartbeats stored", 30*time.Second, func() bool {
		return r.metric("sink_status_records_total") == 4 && r.metric(`sink_status_skipped_total{reason="payload"}`) == 1
	})
	testkit.WaitFor(t, "readings stored", 30*time.Second, func() bool { return countOnly(url) == len(vals) })
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	got := column(t, conn, "SELECT device_id || ' ' || state || ' ' || agent_version FROM fleet_devices ORDER BY 1")
	if want := []string{"pi-1 online 1.4.1", "pi-2 offline 1.3.0"}; !slices.Equal(got, want) {
		t.Errorf("fleet_devices %q, want %q", got, want)
	}
	if got := column(t, conn, "SELECT count(*) FROM device_status"); !slices.Equal(got, []string{"4"}) {
		t.Errorf("device_status has %v rows, want 4", got)
	}
	if log := r.log.String(); !strings.Contains(log, "skipping a status record") || !strings.Contains(log, "topic="+stack.StatusTopic) {
		t.Errorf("the malformed heartbeat is not logged with its position:\n%s", log)
	}
	if err := r.stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
