package fleet

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/cloud/config"
)

// usesDatabase reports whether `fleet status` reads the sink's database:
// DATABASE_URL or DATABASE_URL_FILE is set.
func usesDatabase(getenv func(string) string) bool {
	return getenv("DATABASE_URL") != "" || getenv("DATABASE_URL_FILE") != ""
}

// fromDatabase is the fleet as the sink's devices table holds it (the
// fleet_devices view): every device that ever sent a heartbeat, also
// those whose retained status was cleared. A device reports while it is
// online and was heard within 3 of its status intervals (the view's
// rule, the one the Fleet dashboard shows). DATABASE_URL is read and
// checked as the sink reads it.
func fromDatabase(ctx context.Context, getenv func(string) string, timeout time.Duration, stderr io.Writer) ([]Device, error) {
	cfg, err := config.DatabaseFromEnv(getenv)
	if err != nil {
		return nil, cmdline.Usagef("%v", err)
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "cloud-forwarder-fleet"
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(cctx, `SELECT f.device_id, d.status::text, f.reporting AND f.state = 'online',
		extract(epoch FROM now() - f.last_seen)::double precision
		FROM fleet_devices f JOIN devices d USING (device_id) ORDER BY f.device_id`)
	if err != nil {
		return nil, fmt.Errorf("read fleet_devices (is the sink's schema in place?): %w", err)
	}
	defer rows.Close()
	var devs []Device
	for rows.Next() {
		var d Device
		var status string
		if err := rows.Scan(&d.ID, &status, &d.Reporting, &d.Age); err != nil {
			return nil, fmt.Errorf("read fleet_devices: %w", err)
		}
		if d.Heartbeat, err = heartbeat.Decode([]byte(status)); err != nil {
			fmt.Fprintf(stderr, "%s: status does not decode: %v\n", d.ID, err)
			continue
		}
		devs = append(devs, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read fleet_devices: %w", err)
	}
	return devs, nil
}
