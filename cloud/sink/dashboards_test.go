package sink

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// The dashboards shipped in the repository, relative to this package.
const (
	grafanaDashboard  = "../../docs/dashboards/grafana/dashboards/sensorpipe.json"
	grafanaDatasource = "../../docs/dashboards/grafana/provisioning/datasources/sensorpipe.yaml"
	metabaseGuide     = "../../docs/METABASE.md"
)

// dashboardData writes three devices' readings over the last two hours:
// pi-greenhouse-1 with a BME280 and a DHT22, pi-shed with a DS18B20 and a
// gap of ten seqs, pi-lab with the I2C chips whose values live only in
// the values column (SCD41, BH1750, INA219, an ADS1115 soil probe), so
// every panel has something to show.
func dashboardData(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	w := newWriter(t, conn)
	sensors := map[string][]struct {
		name, kind string
		values     []string
	}{
		"pi-greenhouse-1": {
			{"bme280-0x76", "bme280", []string{reading.Temperature, reading.Humidity, reading.Pressure}},
			{"dht22-gpio4", "dht22", []string{reading.Temperature, reading.Humidity}},
		},
		"pi-shed": {{"ds18b20-1", "ds18b20", []string{reading.Temperature}}},
		"pi-lab": {
			{"scd41-1", "scd4x", []string{reading.CO2, reading.Temperature, reading.Humidity}},
			{"bh1750-0x23", "bh1750", []string{reading.Illuminance}},
			{"ina219-0x40", "ina219", []string{reading.Voltage, reading.Current, reading.Power}},
			{"soil-adc", "ads1115", []string{"soil_moisture_pct", "ain1_v"}},
		},
	}
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	var rows []row
	for dev, ss := range sensors {
		seq := uint64(0)
		for i := range 240 { // every 30 s
			for _, s := range ss {
				seq++
				if dev == "pi-shed" && seq >= 50 && seq < 60 {
					continue
				}
				vals := map[string]float64{}
				for j, k := range s.values {
					vals[k] = float64(20+i%7) + float64(j)*10
				}
				r := &reading.Reading{DeviceID: dev, Seq: seq, Sensor: s.name, Kind: s.kind,
					TS: start.Add(time.Duration(i) * 30 * time.Second), TimeSynced: true, Values: vals}
				rows = append(rows, mustRow(t, r))
			}
		}
	}
	if _, err := w.write(context.Background(), rows, noBad(t)); err != nil {
		t.Fatal(err)
	}
}

// grafanaQueries returns every SQL statement of the dashboard: each
// panel's targets and each template variable's query, by where they are.
func grafanaQueries(t *testing.T) (map[string]string, string) {
	t.Helper()
	return grafanaQueriesOf(t, grafanaDashboard)
}

// grafanaQueriesOf is grafanaQueries for the dashboard at path.
func grafanaQueriesOf(t *testing.T, path string) (map[string]string, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID      string `json:"refId"`
		RawSQL     string `json:"rawSql"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	}
	var d struct {
		Panels []struct {
			Title   string   `json:"title"`
			Targets []target `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	qs := map[string]string{}
	uid := ""
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			qs["panel "+p.Title+" "+tg.RefID] = tg.RawSQL
			if uid == "" {
				uid = tg.Datasource.UID
			} else if tg.Datasource.UID != uid {
				t.Errorf("panel %q uses datasource %q, others %q", p.Title, tg.Datasource.UID, uid)
			}
		}
	}
	for _, v := range d.Templating.List {
		qs["variable "+v.Name] = v.Query
	}
	return qs, uid
}

var (
	timeFilter = regexp.MustCompile(`\$__timeFilter\(([^)]+)\)`)
	deviceVar  = regexp.MustCompile(`\$\{device(:[a-z]+)?\}|\$device\b`)
)

// expandGrafana does what Grafana's PostgreSQL datasource does to a query
// before sending it, for the macros and the variable the dashboard uses:
// a time range of the last day and every device selected.
func expandGrafana(q string) string {
	to := time.Now().UTC()
	from := to.Add(-24 * time.Hour)
	rfc := func(t time.Time) string { return "'" + t.Format(time.RFC3339) + "'" }
	q = timeFilter.ReplaceAllString(q, "$1 BETWEEN "+rfc(from)+" AND "+rfc(to))
	q = strings.ReplaceAll(q, "$__timeFrom()", rfc(from))
	q = strings.ReplaceAll(q, "$__timeTo()", rfc(to))
	return deviceVar.ReplaceAllString(q, "'pi-greenhouse-1','pi-shed','pi-lab'")
}

// sqlBlocks returns the fenced blocks of a Markdown file whose info string
// is exactly info.
func sqlBlocks(t *testing.T, path, info string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur *strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case cur == nil && line == "```"+info:
			cur = &strings.Builder{}
		case cur != nil && line == "```":
			out = append(out, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return out
}

// everyQueryReturnsRows runs, as ro, each Grafana query of a dashboard (at
// least minGrafana of them, from dashboard) and each Metabase question in
// the guide's ```tag blocks (at least minQuestions), each in a subtest that
// fails when the query returns no rows.
func everyQueryReturnsRows(t *testing.T, ro *pgx.Conn, grafana map[string]string, minGrafana int, dashboard, tag string, minQuestions int) {
	t.Helper()
	if len(grafana) < minGrafana {
		t.Fatalf("found only %d queries in %s", len(grafana), dashboard)
	}
	for where, q := range grafana {
		t.Run("grafana "+where, func(t *testing.T) {
			sql := expandGrafana(q)
			if strings.Contains(sql, "$") {
				t.Fatalf("a Grafana macro or variable this test does not expand:\n%s", sql)
			}
			if n := runQuery(t, ro, sql); n == 0 {
				t.Fatalf("no rows:\n%s", sql)
			}
		})
	}
	questions := sqlBlocks(t, metabaseGuide, tag)
	if len(questions) < minQuestions {
		t.Fatalf("found only %d ```%s blocks in %s", len(questions), tag, metabaseGuide)
	}
	for i, q := range questions {
		t.Run("metabase "+strings.Fields(q)[1], func(t *testing.T) {
			if n := runQuery(t, ro, q); n == 0 {
				t.Fatalf("question %d: no rows:\n%s", i+1, q)
			}
		})
	}
}

// runQuery runs q and returns how many rows it gave, reading every value.
func runQuery(t *testing.T, conn *pgx.Conn, q string) int {
	t.Helper()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		if _, err := rows.Values(); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	return n
}

// TestDashboardQueries runs every SQL statement of the Grafana dashboard
// and of the Metabase guide, taken from the files themselves, against a
// migrated database holding readings, as the guide's read-only role: each
// must run and return rows.
func TestDashboardQueries(t *testing.T) {
	conn, dbURL := migrated(t)
	dashboardData(t, conn)
	ctx := context.Background()
	setup := sqlBlocks(t, metabaseGuide, "sql setup")
	if len(setup) != 1 {
		t.Fatalf("%s: %d ```sql setup blocks, want 1 (the read-only role)", metabaseGuide, len(setup))
	}
	if _, err := conn.Exec(ctx, setup[0]); err != nil {
		t.Fatalf("the guide's role setup: %v\n%s", err, setup[0])
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

	grafana, uid := grafanaQueries(t)
	ds, err := os.ReadFile(grafanaDatasource)
	if err != nil {
		t.Fatal(err)
	}
	var prov struct {
		Datasources []struct{ UID, Type string } `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(ds, &prov); err != nil || len(prov.Datasources) != 1 || prov.Datasources[0].UID != uid {
		t.Errorf("%s provisions %+v (%v); the dashboard's panels use uid %q", grafanaDatasource, prov.Datasources, err, uid)
	}
	everyQueryReturnsRows(t, ro, grafana, 8, grafanaDashboard, "sql", 8)

	// The views answer what their names promise.
	var first, last, missing int64
	if err := ro.QueryRow(ctx, "SELECT first_missing, last_missing, missing FROM device_gaps WHERE device_id = 'pi-shed'").Scan(&first, &last, &missing); err != nil {
		t.Fatal(err)
	}
	if first != 50 || last != 59 || missing != 10 {
		t.Errorf("pi-shed's gap: %d..%d (%d), want 50..59 (10)", first, last, missing)
	}
	if n := runQuery(t, ro, "SELECT * FROM device_gaps WHERE device_id = 'pi-greenhouse-1'"); n != 0 {
		t.Errorf("pi-greenhouse-1 has no gap, device_gaps shows %d", n)
	}
	var sensors int
	var lastSeq int64
	if err := ro.QueryRow(ctx, "SELECT sensors, last_seq FROM devices_last_seen WHERE device_id = 'pi-greenhouse-1'").Scan(&sensors, &lastSeq); err != nil {
		t.Fatal(err)
	}
	if sensors != 2 || lastSeq != 480 {
		t.Errorf("devices_last_seen for pi-greenhouse-1: %d sensors, last seq %d; want 2, 480", sensors, lastSeq)
	}
	if n := runQuery(t, ro, "SELECT * FROM latest_readings"); n != 7 {
		t.Errorf("latest_readings has %d rows, want 7 (one per device and sensor)", n)
	}
	valuePanels(t, ro, grafana)
	var perMinute int
	if err := ro.QueryRow(ctx, "SELECT max(readings) FROM readings_per_minute WHERE device_id = 'pi-greenhouse-1' AND sensor = 'bme280-0x76'").Scan(&perMinute); err != nil || perMinute != 2 {
		t.Errorf("readings_per_minute: %d readings in a minute (%v), want 2 (one every 30 s)", perMinute, err)
	}
}

// valuePanels checks that the panels for the quantities kept in the
// values column (co2_ppm, illuminance_lux, the INA219's three, any other
// key such as an ADC channel's) show exactly their series, with the
// per-minute averages of what was written: 20 + i%7 + 10 x the field's
// place, two readings per minute.
func valuePanels(t *testing.T, conn *pgx.Conn, grafana map[string]string) {
	t.Helper()
	want := map[string][]string{
		"CO2 (per-minute average)":         {"pi-lab/scd41-1"},
		"Illuminance (per-minute average)": {"pi-lab/bh1750-0x23"},
		"Power monitors: voltage, current, power (per-minute average)": {
			"pi-lab/ina219-0x40 current_a", "pi-lab/ina219-0x40 power_w", "pi-lab/ina219-0x40 voltage_v"},
		"Other values: ADC channels and any other field (per-minute average)": {
			"pi-lab/soil-adc ain1_v", "pi-lab/soil-adc soil_moisture_pct"},
	}
	for title, series := range want {
		q, ok := grafana["panel "+title+" A"]
		if !ok {
			t.Errorf("no panel %q", title)
			continue
		}
		rows, err := conn.Query(context.Background(), expandGrafana(q))
		if err != nil {
			t.Fatalf("%s: %v", title, err)
		}
		got := map[string]bool{}
		for rows.Next() {
			var ts time.Time
			var metric string
			var value float64
			if err := rows.Scan(&ts, &metric, &value); err != nil {
				t.Fatalf("%s: %v", title, err)
			}
			got[metric] = true
			if value < 20 || value > 46 {
				t.Errorf("%s: %s = %v at %v, outside what was written", title, metric, value, ts)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		var names []string
		for m := range got {
			names = append(names, m)
		}
		slices.Sort(names)
		if !slices.Equal(names, series) {
			t.Errorf("%s shows %q, want %q", title, names, series)
		}
	}
}
