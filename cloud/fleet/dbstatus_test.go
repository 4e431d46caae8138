package fleet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/cloud/fleet"
	"github.com/edgepipe/sensorpipe/cloud/sink/schema"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
)

// TestStatusFromDatabase runs `fleet status` against the sink's schema on
// a real PostgreSQL holding four devices: one reporting, one silent for 3
// of its 10 s intervals (45 s), one offline, one long silent. The JSON and
// the table say which report, with their versions and backlogs.
func TestStatusFromDatabase(t *testing.T) {
	c := pgcluster.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url, err := c.CreateDatabase(ctx, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, _, err := schema.Migrate(ctx, conn, nil); err != nil {
		t.Fatal(err)
	}
	for i, d := range []struct {
		id     string
		age    time.Duration
		status string
	}{
		{"pi-ok", 20 * time.Second, `{"v":2,"state":"online","agent":"1.4.0","buffer":{"readings":12,"bytes":3000,"unconfirmed":5}}`},
		{"pi-fast", 45 * time.Second, `{"v":2,"state":"online","agent":"1.4.0","status_interval":10,"buffer":{"readings":7,"bytes":900}}`},
		{"pi-off", 5 * time.Second, `{"v":2,"state":"offline","agent":"1.3.2"}`},
		{"pi-gone", time.Hour, `{"v":2,"state":"online","agent":"1.3.2","buffer":{"readings":50000,"bytes":1300000},
			"sensors":{"ds18b20-1":{"state":"failing","fails":9}}}`},
	} {
		if _, err := conn.Exec(ctx, `INSERT INTO devices (device_id, state, status, heard_at, kafka_partition, kafka_offset)
			VALUES ($1, $2, $3, now() - $4::interval, 0, $5)`, d.id, map[bool]string{true: "offline", false: "online"}[d.id == "pi-off"],
			d.status, fmt.Sprintf("%d seconds", int(d.age.Seconds())), i); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"DATABASE_URL": url}
	run := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := fleet.Run(ctx, append([]string{"status"}, args...), func(k string) string { return env[k] }, &out, &errb)
		return out.String() + errb.String(), err
	}
	out, err := run("--json")
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var devs []fleet.Device
	if err := json.Unmarshal([]byte(out), &devs); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := map[string]bool{}
	for _, d := range devs {
		got[d.ID] = d.Reporting
	}
	want := map[string]bool{"pi-ok": true, "pi-fast": false, "pi-off": false, "pi-gone": false}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reporting %v, want %v", got, want)
	}
	for _, d := range devs {
		if d.ID == "pi-gone" && (d.Heartbeat.Buffer == nil || d.Heartbeat.Buffer.Readings != 50000 || d.Age < 3590) {
			t.Errorf("pi-gone: %+v", d)
		}
	}
	out, err = run()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, w := range []string{"4 devices, 1 reporting, 3 not reporting", "versions: 1.3.2 x2, 1.4.0 x2", "ds18b20-1", "50000"} {
		if !strings.Contains(out, w) {
			t.Errorf("status output lacks %q:\n%s", w, out)
		}
	}

	// DATABASE_URL is checked as the sink checks it: no plaintext to
	// another host; the error names the key and never the password.
	env["DATABASE_URL"] = "postgres://u:hunter2@db.example.com/x?sslmode=disable"
	out, err = run()
	if !errors.Is(err, cmdline.ErrUsage) || !strings.Contains(err.Error(), "DATABASE_URL") || strings.Contains(err.Error()+out, "hunter2") {
		t.Errorf("plaintext DATABASE_URL to a remote host: %v\n%s", err, out)
	}
}
