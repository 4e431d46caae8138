// Package schema creates and migrates the sink's PostgreSQL schema: the
// readings table, its indexes and the views the dashboards read.
//
// Migrations are the numbered SQL files in migrations/ (001_readings.sql,
// ...), embedded in the binary and applied in order, each in its own
// transaction together with the row recording it in sensorpipe_schema.
// Migrate holds a PostgreSQL advisory lock while it works, so replicas
// starting at the same moment take turns: the first applies what is
// missing, the others find it done. Running it again changes nothing.
// Every wait for a lock (that advisory lock, and the table locks a
// migration's DDL takes) is bounded by PostgreSQL's lock_timeout
// (Options.LockTimeout): past it Migrate returns ErrLockTimeout, naming the
// session that holds the migration lock, instead of waiting unseen. The
// migration itself has no time limit but the caller's context. A
// database migrated by a newer sink is refused (ErrTooNew) rather than
// written to by code that does not know its shape.
//
// It does not drop or rewrite data; a later migration that must is a new
// numbered file.
//
// Example:
//
//	conn, _ := pgx.Connect(ctx, url)
//	from, to, err := schema.Migrate(ctx, conn, nil)
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
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed migrations/*.sql
var files embed.FS

// ErrTooNew means the database was migrated by a newer sink.
var ErrTooNew = errors.New("database schema is newer than this sink")

// ErrLockTimeout means a migration gave up waiting for a lock after
// Options.LockTimeout: another session holds the migration lock (another
// sink migrating) or a lock a migration's DDL needs (a long query on the
// table). Nothing was changed by the step that waited; trying again later
// is safe.
var ErrLockTimeout = errors.New("schema migration gave up waiting for a lock")

// DefaultLockTimeout is Options.LockTimeout when it is zero.
const DefaultLockTimeout = 10 * time.Second

// Options tune Migrate; nil or zero fields mean the defaults.
type Options struct {
	// LockTimeout is the migration session's lock_timeout: how long one
	// wait for a lock may last. Longer lets a second replica sit out a
	// longer migration of the first in one try; shorter holds up less of
	// the traffic that queues behind a DDL statement waiting for its table
	// lock (PostgreSQL grants locks in order, so a waiting ALTER TABLE
	// stalls every query on the table that comes after it).
	LockTimeout time.Duration
}

// LockKey is the advisory lock (pg_advisory_lock's bigint) migrations hold,
// "sensorpi" in ASCII: it only has to be unlikely to collide with another
// application's lock on the same database. In pg_locks it is the advisory
// lock with classid 1936027251 and objid 1869770857 (the key's high and low
// 32 bits), objsubid 1.
const LockKey int64 = 0x73656e736f727069

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
// version it found and the version it left. opts may be nil. It sets
// lock_timeout on conn's session while it runs and puts the previous value
// back.
func Migrate(ctx context.Context, conn *pgx.Conn, opts *Options) (from, to int, err error) {
	ms, err := Migrations()
	if err != nil {
		return 0, 0, err
	}
	lt := DefaultLockTimeout
	if opts != nil && opts.LockTimeout > 0 {
		lt = opts.LockTimeout
	}
	var prev string
	if err := conn.QueryRow(ctx, "SELECT current_setting('lock_timeout')").Scan(&prev); err != nil {
		return 0, 0, fmt.Errorf("read lock_timeout: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT set_config('lock_timeout', $1, false)", strconv.FormatInt(max(lt.Milliseconds(), 1), 10)+"ms"); err != nil {
		return 0, 0, fmt.Errorf("set lock_timeout: %w", err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT set_config('lock_timeout', $1, false)", prev)
	}()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", LockKey); err != nil {
		if isLockTimeout(err) {
			return 0, 0, fmt.Errorf("%w: the migration lock, after lock_timeout %v: %s holds it (another sink migrating the schema?)",
				ErrLockTimeout, lt, holder(context.WithoutCancel(ctx), conn))
		}
		return 0, 0, fmt.Errorf("take the migration lock: %w", err)
	}
	defer func() {
		// A lost connection releases the lock by itself.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", LockKey)
	}()
	if from, err = current(ctx, conn); err != nil {
		return 0, 0, lockTimeout(err, lt)
	}
	latest := ms[len(ms)-1].Version
	if from > latest {
		return from, from, fmt.Errorf("%w: version %d, this sink knows up to %d", ErrTooNew, from, latest)
	}
	to = from
	for _, m := range ms[from:] {
		if err := apply(ctx, conn, m); err != nil {
			return from, to, lockTimeout(err, lt)
		}
		to = m.Version
	}
	return from, to, nil
}

// isLockTimeout tells lock_timeout firing (SQLSTATE 55P03, lock_not_available).
func isLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

// lockTimeout marks err with ErrLockTimeout when lock_timeout caused it.
func lockTimeout(err error, lt time.Duration) error {
	if !isLockTimeout(err) {
		return err
	}
	return fmt.Errorf("%w after lock_timeout %v (another session, such as a long query, holds a lock the migration needs): %w",
		ErrLockTimeout, lt, err)
}

// holder describes the session holding the migration lock, for the error
// that says Migrate gave up waiting for it.
func holder(ctx context.Context, conn *pgx.Conn) string {
	var (
		pid       int
		app, from string
	)
	err := conn.QueryRow(ctx, `SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'a local socket')
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1`,
		LockKey>>32, LockKey&0xffffffff).Scan(&pid, &app, &from)
	if err != nil {
		return "another session"
	}
	return fmt.Sprintf("session pid %d (application_name %q, from %s)", pid, app, from)
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
