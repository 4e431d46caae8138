package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
	"github.com/edgepipe/sensorpipe/scripts/testkit/proc"
)

// sinkStage is the pipeline's last step: a throwaway PostgreSQL cluster and
// `cloud-forwarder sink` writing the topic into it, through the same Kafka
// proxy as the forwarders, so the Kafka outage hits it too.
type sinkStage struct {
	cluster *pgcluster.Cluster
	url     string
	proc    *proc.Proc
}

// startSink starts the database step, or returns nil with the reason when
// no PostgreSQL server is installed (an error with CI=true).
func (s *stack) startSink(ctx context.Context) (string, error) {
	if s.opts.noDB {
		return "skipped: -no-db", nil
	}
	bin, err := pgcluster.Find()
	if errors.Is(err, pgcluster.ErrNotFound) && os.Getenv("CI") != "true" {
		return "skipped: no PostgreSQL server here (apt install postgresql adds the database step)", nil
	}
	if err != nil {
		return "", err
	}
	// As root the server runs as the postgres user, which must reach its
	// directory inside ours.
	if err := os.Chmod(s.dir, 0o711); err != nil {
		return "", err
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{BinDir: bin, Parent: s.dir})
	if err != nil {
		return "", fmt.Errorf("postgresql: %w", err)
	}
	st := &sinkStage{cluster: c}
	s.sink = st
	if st.url, err = c.CreateDatabase(ctx, "sensorpipe"); err != nil {
		return "", err
	}
	listen, err := testkit.PickAddr()
	if err != nil {
		return "", err
	}
	st.proc = &proc.Proc{
		Name: "e2e-sink", Argv: []string{s.bin("cloud-forwarder"), "sink"},
		LogPath: filepath.Join(s.dir, "e2e-sink.log"), TimeBin: s.opts.timeBin,
		Env: []string{
			"CONFLUENT_BOOTSTRAP_SERVER_SASL=" + s.kafka.Addr,
			"CONFLUENT_API_KEY=" + kafkaUser,
			"CONFLUENT_API_SECRET=" + kafkaPass,
			"KAFKA_SECURITY_PROTOCOL=SASL_SSL",
			"KAFKA_CA_FILE=" + s.certs.CAFile,
			"KAFKA_TOPIC=" + topic,
			"DATABASE_URL=" + st.url,
			"SINK_LISTEN=" + listen,
		},
	}
	if err := st.proc.Start(); err != nil {
		return "", err
	}
	if err := proc.WaitListening(ctx, st.proc, listen, 20*time.Second); err != nil {
		return "", err
	}
	return fmt.Sprintf("cloud-forwarder sink -> PostgreSQL (%s, 127.0.0.1:%d)", bin, c.Port), nil
}

// dbCount is the table's rows and distinct (device_id, seq) of device.
func (st *sinkStage) dbCount(ctx context.Context, device string) (rows, distinct int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, st.url)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT seq) FROM readings WHERE device_id = $1", device).Scan(&rows, &distinct)
	return rows, distinct, err
}

// drainSink waits until the table holds want readings of device (or d
// passes), then stops the sink, and returns the final count.
func (s *stack) drainSink(ctx context.Context, want int, d time.Duration) (rows, distinct int, err error) {
	deadline := time.Now().Add(d)
	for {
		rows, distinct, err = s.sink.dbCount(ctx, deviceID)
		if (err == nil && rows >= want) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if serr := s.sink.proc.Stop(20 * time.Second); serr != nil && err == nil {
		err = serr
	}
	return rows, distinct, err
}

// close stops the sink and removes the cluster.
func (st *sinkStage) close() {
	if st.proc != nil {
		st.proc.Destroy()
	}
	_ = st.cluster.Remove()
}
