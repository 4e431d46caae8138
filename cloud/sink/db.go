package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// stage is the session's temporary table each batch is copied into before
// one INSERT ... ON CONFLICT moves it to readings. Its rows vanish at
// commit (and at rollback), so every batch starts from an empty table.
const stage = "sink_stage"

var createStage = `CREATE TEMPORARY TABLE IF NOT EXISTS ` + stage + ` (
	device_id text, seq bigint, sensor text, kind text, ts timestamptz, time_synced boolean,
	temperature_c double precision, humidity_pct double precision, pressure_hpa double precision,
	"values" jsonb, agg jsonb, covers_first bigint, covers_last bigint) ON COMMIT DELETE ROWS`

var insertFromStage = func() string {
	cols := `"` + strings.Join(columns, `", "`) + `"`
	return `INSERT INTO readings (` + cols + `) SELECT ` + cols + ` FROM ` + stage +
		` ON CONFLICT (device_id, seq) DO NOTHING`
}()

// writer puts batches of rows into readings on one connection. It is
// used by one goroutine at a time.
type writer struct {
	conn  *pgx.Conn
	fails int // consecutive failures to connect or write, for the backoff
}

// close ends the session, if there is one.
func (w *writer) close(ctx context.Context) {
	if w.conn != nil {
		_ = w.conn.Close(context.WithoutCancel(ctx))
		w.conn = nil
	}
}

// backoff grows with consecutive failures: 250ms, 500ms, ... 10s.
func (w *writer) backoff() time.Duration {
	n := min(w.fails, 7)
	return min(250*time.Millisecond<<max(n-1, 0), 10*time.Second)
}

// prepare readies a fresh connection: the staging table is per session.
func (w *writer) prepare(ctx context.Context) error {
	if _, err := w.conn.Exec(ctx, createStage); err != nil {
		return fmt.Errorf("create the staging table: %w", err)
	}
	return nil
}

// result is what one write did.
type result struct {
	inserted int64 // new rows
	dups     int64 // rows already in the table (or twice in the batch)
	batches  int   // transactions committed
}

// write stores rows. It first copies them straight into readings (one
// COPY, its own transaction): the common case, a batch seen for the first
// time, costs PostgreSQL no more than a bulk load. If PostgreSQL refuses
// that COPY (a row already in the table, as after a redelivery, or a
// value it will not take), nothing of it stays, and the batch goes the
// careful way: writeStaged. Any other error (the connection) is returned
// as is, for the caller to retry the batch.
func (w *writer) write(ctx context.Context, rows []row, bad func(row, error)) (result, error) {
	if len(rows) == 0 {
		return result{}, nil
	}
	n, err := w.conn.CopyFrom(ctx, pgx.Identifier{"readings"}, columns, &rowSource{rows: rows, buf: make([]any, 0, len(columns))})
	if err == nil {
		return result{inserted: n, batches: 1}, nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return result{}, fmt.Errorf("copy %d rows: %w", len(rows), err)
	}
	return w.writeStaged(ctx, rows, bad)
}

// writeStaged stores rows, in one transaction when it can, dropping those
// already in the table. When PostgreSQL refuses the data (not the
// connection), it splits the batch and retries the halves, down to single
// rows: a row refused on its own is passed to bad and skipped, so one bad
// row never holds up the others or the stream. Any other error is returned
// as is, for the caller to retry the batch (rows already committed by then
// come back as duplicates).
func (w *writer) writeStaged(ctx context.Context, rows []row, bad func(row, error)) (result, error) {
	var res result
	if len(rows) == 0 {
		return res, nil
	}
	n, err := w.tx(ctx, rows)
	if err == nil {
		res.inserted, res.dups, res.batches = n, int64(len(rows))-n, 1
		return res, nil
	}
	if !isDataError(err) {
		return res, err
	}
	if len(rows) == 1 {
		bad(rows[0], err)
		return res, nil
	}
	half := len(rows) / 2
	for _, part := range [][]row{rows[:half], rows[half:]} {
		r, err := w.writeStaged(ctx, part, bad)
		res.inserted += r.inserted
		res.dups += r.dups
		res.batches += r.batches
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// tx copies rows into the staging table and inserts the new ones into
// readings, in one transaction; it returns how many were new.
func (w *writer) tx(ctx context.Context, rows []row) (int64, error) {
	tx, err := w.conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after Commit
	_, err = tx.CopyFrom(ctx, pgx.Identifier{stage}, columns, &rowSource{rows: rows, buf: make([]any, 0, len(columns))})
	if err != nil {
		return 0, fmt.Errorf("copy %d rows: %w", len(rows), err)
	}
	tag, err := tx.Exec(ctx, insertFromStage)
	if err != nil {
		return 0, fmt.Errorf("insert %d rows: %w", len(rows), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit %d rows: %w", len(rows), err)
	}
	return tag.RowsAffected(), nil
}

// isDataError tells PostgreSQL refusing a value (SQLSTATE class 22 data
// exception, 23 integrity constraint violation, 54 program limit such as an
// index entry too large) from everything else (connection lost, server
// shutting down, out of disk), which retrying the same batch later may cure.
func isDataError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}
