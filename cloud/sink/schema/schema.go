// Package schema creates and migrates the sink's PostgreSQL schema: the
// readings table, its indexes and the views the dashboards read.
//
// Migrations are the numbered SQL files in migrations/ (001_readings.sql,
// ...), embedded in the binary and applied in order, each in its own
// transaction together with the row recording it in sensorpipe_schema.
// Migrate holds a PostgreSQL advisory lock while it works, so replicas
// starting at the same moment take turns: the first applies what is
// missing, the others find it done. Running it again changes nothing. A
// database migrated by a newer sink is refused (ErrTooNew) rather than
// written to by code that does not know its shape.
//
// It does not drop or rewrite data; a later migration that must is a new
// numbered file.
//
// Example:
//
//	conn, _ := pgx.Connect(ctx, url)
//	from, to, err := schema.Migrate(ctx, conn)
package schema

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var files embed.FS

// ErrTooNew means the database was migrated by a newer sink.
var ErrTooNew = errors.New("database schema is newer than this sink")

// lockKey is the advisory lock (pg_advisory_lock's bigint) migrations hold,
// "sensorpi" in ASCII: it only has to be unlikely to collide with another
// application's lock on the same database.
const lockKey int64 = 0x73656e736f727069

// Migration is one numbered SQL file.
type Migration struct {
	Version int
	Name    string // file name, e.g. 001_readings.sql
	SQL     string
}

// Migrations returns the embedded migrations in order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(files, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for i, e := range entries { // ReadDir sorts by name
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s: want the name %03d_<what>.sql", e.Name(), i+1)
		}
		b, err := files.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	return ms, nil
}

// Latest is the version Migrate brings a database to.
func Latest() int {
	ms, err := Migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// Migrate applies the migrations the database lacks and returns the
// version it found and the version it left.
func Migrate(ctx context.Context, conn *pgx.Conn) (from, to int, err error) {
	ms, err := Migrations()
	if err != nil {
		return 0, 0, err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return 0, 0, fmt.Errorf("take the migration lock: %w", err)
	}
	defer func() {
		// A lost connection releases the lock by itself.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey)
	}()
	if from, err = current(ctx, conn); err != nil {
		return 0, 0, err
	}
	latest := ms[len(ms)-1].Version
	if from > latest {
		return from, from, fmt.Errorf("%w: version %d, this sink knows up to %d", ErrTooNew, from, latest)
	}
	to = from
	for _, m := range ms[from:] {
		if err := apply(ctx, conn, m); err != nil {
			return from, to, err
		}
		to = m.Version
	}
	return from, to, nil
}

// current reads the applied version, creating the bookkeeping table if
// needed (only then: a role without CREATE can run an up-to-date sink).
func current(ctx context.Context, conn *pgx.Conn) (int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('sensorpipe_schema') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("look for sensorpipe_schema: %w", err)
	}
	if !exists {
		_, err := conn.Exec(ctx, `CREATE TABLE sensorpipe_schema (
			version    int PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`)
		if err != nil {
			return 0, fmt.Errorf("create sensorpipe_schema: %w", err)
		}
	}
	var v int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM sensorpipe_schema").Scan(&v); err != nil {
		return 0, fmt.Errorf("read the schema version: %w", err)
	}
	return v, nil
}

func apply(ctx context.Context, conn *pgx.Conn, m Migration) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(ctx, m.SQL); err != nil {
		return fmt.Errorf("migration %s: %w", m.Name, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO sensorpipe_schema (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
		return fmt.Errorf("record migration %s: %w", m.Name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit migration %s: %w", m.Name, err)
	}
	return nil
}
