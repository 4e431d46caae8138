package schema_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/cloud/sink/schema"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
)

var pg pgcluster.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	pg.Close()
	os.Exit(code)
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func TestMigrationsAreNumberedInOrder(t *testing.T) {
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || schema.Latest() != ms[len(ms)-1].Version {
		t.Fatalf("migrations %v, latest %d", ms, schema.Latest())
	}
}

// TestMigrateIsIdempotent runs Migrate twice: the second run finds the
// latest version and changes nothing.
func TestMigrateIsIdempotent(t *testing.T) {
	conn := connect(t, pg.Database(t))
	ctx := context.Background()
	from, to, err := schema.Migrate(ctx, conn)
	if err != nil || from != 0 || to != schema.Latest() {
		t.Fatalf("first Migrate = %d, %d, %v; want 0, %d, nil", from, to, err, schema.Latest())
	}
	from, to, err = schema.Migrate(ctx, conn)
	if err != nil || from != schema.Latest() || to != schema.Latest() {
		t.Fatalf("second Migrate = %d, %d, %v; want %d, %d, nil", from, to, err, schema.Latest(), schema.Latest())
	}
	for _, rel := range []string{"readings", "readings_per_minute", "latest_readings", "devices_last_seen", "device_gaps"} {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", rel).Scan(&ok); err != nil || !ok {
			t.Errorf("%s missing after Migrate (%v)", rel, err)
		}
	}
}

// TestMigrateConcurrently starts several replicas' migrations on a fresh
// database at once: all succeed, each migration is applied once.
func TestMigrateConcurrently(t *testing.T) {
	url := pg.Database(t)
	const replicas = 4
	conns := make([]*pgx.Conn, replicas)
	for i := range conns {
		conns[i] = connect(t, url)
	}
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	froms := make([]int, replicas)
	start := make(chan struct{})
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			froms[i], _, errs[i] = schema.Migrate(context.Background(), conns[i])
		}()
	}
	close(start)
	wg.Wait()
	fresh := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		if froms[i] == 0 {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d replicas found an empty database; want exactly 1 (the others wait on the lock)", fresh)
	}
	var n int
	if err := conns[0].QueryRow(context.Background(), "SELECT count(*) FROM sensorpipe_schema").Scan(&n); err != nil || n != schema.Latest() {
		t.Fatalf("sensorpipe_schema has %d rows (%v), want %d", n, err, schema.Latest())
	}
}

func TestMigrateRefusesANewerDatabase(t *testing.T) {
	conn := connect(t, pg.Database(t))
	ctx := context.Background()
	if _, _, err := schema.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO sensorpipe_schema (version, name) VALUES (999, '999_future.sql')"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := schema.Migrate(ctx, conn); !errors.Is(err, schema.ErrTooNew) {
		t.Fatalf("Migrate on a newer database: %v, want ErrTooNew", err)
	}
}
