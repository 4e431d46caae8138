package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
	"github.com/edgepipe/sensorpipe/scripts/testkit/proc"
)

// database is the demo's last step when PostgreSQL is installed: a
// throwaway cluster in the demo's directory and `cloud-forwarder sink`
// writing the readings from Kafka into it.
type database struct {
	cluster *pgcluster.Cluster
	url     string
	sink    *proc.Proc
}

// startDatabase starts the cluster and the sink, or returns nil, nil (after
// saying how to add the step) when no PostgreSQL server is installed.
func startDatabase(ctx context.Context, o Options, dir, kafkaAddr string, out io.Writer) (*database, error) {
	bin, err := pgcluster.Find()
	if errors.Is(err, pgcluster.ErrNotFound) {
		fmt.Fprintln(out, "demo: no PostgreSQL server here, so the readings stop in Kafka; `sudo apt install postgresql` (Debian, Ubuntu) adds the last step: cloud-forwarder sink writing them into a table")
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// The server runs as the postgres user when we are root: it must be
	// able to reach its directory inside ours.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{BinDir: bin, Parent: dir})
	if err != nil {
		return nil, fmt.Errorf("postgresql: %w", err)
	}
	d := &database{cluster: c}
	if d.url, err = c.CreateDatabase(ctx, "sensorpipe"); err != nil {
		d.close()
		return nil, err
	}
	d.sink, err = start("cloud-forwarder sink", filepath.Join(o.BinDir, "cloud-forwarder"), []string{"sink"}, []string{
		"KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
		"CONFLUENT_BOOTSTRAP_SERVER_SASL=" + kafkaAddr,
		"KAFKA_TOPIC=" + o.Topic,
		"DATABASE_URL=" + d.url,
		"SINK_LISTEN=127.0.0.1:0",
	}, filepath.Join(dir, "cloud-forwarder-sink.log"))
	if err != nil {
		d.close()
		return nil, err
	}
	fmt.Fprintf(out, "demo: PostgreSQL (%s) on 127.0.0.1:%d; cloud-forwarder sink writes every reading into table readings (psql %q)\n",
		bin, c.Port, d.url)
	return d, nil
}

// rows counts the distinct readings in the table.
func (d *database) rows(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM readings").Scan(&n); err != nil {
		return 0, err
	}
	return n, nil
}

// waitRows waits up to d for the table to hold want rows and returns the count.
func (d *database) waitRows(ctx context.Context, want int, wait time.Duration) (int, error) {
	deadline := time.Now().Add(wait)
	for {
		n, err := d.rows(ctx)
		if (err == nil && n >= want) || time.Now().After(deadline) {
			return n, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// close stops the sink and the server and removes the cluster.
func (d *database) close() error {
	var err error
	if d.sink != nil {
		err = stop(d.sink, 10*time.Second)
	}
	return errors.Join(err, d.cluster.Remove())
}
