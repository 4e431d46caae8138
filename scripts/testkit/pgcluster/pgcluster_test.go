package pgcluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgepipe/sensorpipe/scripts/testkit/pgcluster"
)

func count(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCrashKeepsCommittedRows checks what the sink's fault tests rely on:
// a row committed before an immediate shutdown is there after the restart,
// on the same port, over TCP and over the unix socket.
func TestCrashKeepsCommittedRows(t *testing.T) {
	c := pgcluster.ForTest(t)
	ctx := context.Background()
	url, err := c.CreateDatabase(ctx, "crash")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.Crash(); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, url); err == nil {
		t.Fatal("connected to a crashed server")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, url); n != 1000 {
		t.Fatalf("after crash and restart: %d rows, want 1000", n)
	}
	socket := c.SocketURL("crash")
	if n := count(t, socket); n != 1000 {
		t.Fatalf("over %s: %d rows, want 1000", socket, n)
	}
}

var shared pgcluster.Shared

func TestSharedGivesEachTestItsOwnDatabase(t *testing.T) {
	a, b := shared.Database(t), shared.Database(t)
	if a == b {
		t.Fatalf("same database twice: %s", a)
	}
	t.Cleanup(shared.Close)
}
