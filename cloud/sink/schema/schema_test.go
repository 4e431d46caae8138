package schema_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
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
	from, to, err := schema.Migrate(ctx, conn, nil)
	if err != nil || from != 0 || to != schema.Latest() {
		t.Fatalf("first Migrate = %d, %d, %v; want 0, %d, nil", from, to, err, schema.Latest())
	}
	from, to, err = schema.Migrate(ctx, conn, nil)
	if err != nil || from != schema.Latest() || to != schema.Latest() {
		t.Fatalf("second Migrate = %d, %d, %v; want %d, %d, nil", from, to, err, schema.Latest(), schema.Latest())
	}
	for _, rel := range []string{"readings", "readings_per_minute", "latest_readings", "devices_last_seen", "device_gaps", "readings_folded"} {
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
			froms[i], _, errs[i] = schema.Migrate(context.Background(), conns[i], nil)
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
	if _, _, err := schema.Migrate(ctx, conn, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO sensorpipe_schema (version, name) VALUES (999, '999_future.sql')"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := schema.Migrate(ctx, conn, nil); !errors.Is(err, schema.ErrTooNew) {
		t.Fatalf("Migrate on a newer database: %v, want ErrTooNew", err)
	}
}

// connectAs is connect with an application_name, so a test can tell
// sessions apart in pg_stat_activity.
func connectAs(t *testing.T, url, app string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = app
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func lockTimeoutOf(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(context.Background(), "SHOW lock_timeout").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMigrateGivesUpOnAHeldMigrationLock: while another session (a sink
// in the middle of a migration) holds the migration lock, Migrate returns
// ErrLockTimeout after lock_timeout, naming the holder, rather than
// waiting unseen; it leaves the session's lock_timeout as it found it, and
// succeeds once the lock is released.
func TestMigrateGivesUpOnAHeldMigrationLock(t *testing.T) {
	url := pg.Database(t)
	ctx := context.Background()
	other := connectAs(t, url, "other-sink")
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", schema.LockKey); err != nil {
		t.Fatal(err)
	}
	var otherPID int
	if err := other.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&otherPID); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, url)
	before := lockTimeoutOf(t, conn)
	const lt = 300 * time.Millisecond
	start := time.Now()
	_, _, err := schema.Migrate(ctx, conn, &schema.Options{LockTimeout: lt})
	waited := time.Since(start)
	if !errors.Is(err, schema.ErrLockTimeout) {
		t.Fatalf("Migrate with the lock held elsewhere = %v, want ErrLockTimeout", err)
	}
	for _, want := range []string{"migration lock", "lock_timeout 300ms", "pid " + strconv.Itoa(otherPID), `"other-sink"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if waited < lt {
		t.Errorf("gave up after %v, before lock_timeout %v", waited, lt)
	}
	if got := lockTimeoutOf(t, conn); got != before {
		t.Errorf("lock_timeout left at %s, was %s", got, before)
	}
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock($1)", schema.LockKey); err != nil {
		t.Fatal(err)
	}
	if from, to, err := schema.Migrate(ctx, conn, &schema.Options{LockTimeout: lt}); err != nil || from != 0 || to != schema.Latest() {
		t.Fatalf("Migrate after the lock was released = %d, %d, %v", from, to, err)
	}
}

// TestMigrateGivesUpOnATableLock: a lock on a table the migration reads or
// changes (here a transaction holding sensorpipe_schema exclusively, as a
// long query or a manual change would) ends the migration with
// ErrLockTimeout after lock_timeout instead of queueing behind it for ever.
func TestMigrateGivesUpOnATableLock(t *testing.T) {
	url := pg.Database(t)
	ctx := context.Background()
	conn := connect(t, url)
	if _, _, err := schema.Migrate(ctx, conn, nil); err != nil {
		t.Fatal(err)
	}
	other := connectAs(t, url, "long-query")
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "LOCK TABLE sensorpipe_schema IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	_, _, err = schema.Migrate(ctx, conn, &schema.Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, schema.ErrLockTimeout) || !strings.Contains(err.Error(), "55P03") {
		t.Fatalf("Migrate behind a table lock = %v, want ErrLockTimeout (SQLSTATE 55P03)", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := schema.Migrate(ctx, conn, nil); err != nil {
		t.Fatalf("Migrate once the table is free: %v", err)
	}
}
