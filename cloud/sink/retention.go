package sink

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Retention pacing: a pass every retentionEvery, deleting retentionBatch
// rows per statement with a pause between statements, so each DELETE holds
// its row locks for milliseconds and the writer and autovacuum keep pace.
const (
	retentionEvery = 10 * time.Minute
	retentionBatch = 5000
	retentionPause = 50 * time.Millisecond
)

// retain runs a retention pass a minute after start and every
// retentionEvery after, on a connection of its own.
func (s *Sink) retain(ctx context.Context) {
	for wait := time.Minute; sleep(ctx, wait); wait = retentionEvery {
		n, err := s.retentionPass(ctx)
		s.m.deleted.AddInt64(n)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("retention pass failed; trying again later", "deleted", n, "err", err)
		case n > 0:
			s.log.Info("retention pass", "deleted", n, "older_than", s.cfg.Retention.String())
		}
	}
}

func (s *Sink) retentionPass(ctx context.Context) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, s.connectTimeout)
	conn, err := pgx.ConnectConfig(cctx, s.dbCfg)
	cancel()
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	cutoff := time.Now().Add(-s.cfg.Retention)
	n, err := deleteOlder(ctx, conn, cutoff, retentionBatch, retentionPause)
	if err != nil {
		return n, err
	}
	m, err := deleteStatusOlder(ctx, conn, cutoff, retentionBatch, retentionPause)
	return n + m, err
}

// deleteOlder deletes the rows both taken (ts) and received (received_at)
// before cutoff, batch rows per statement: a reading that arrives late,
// from a device that was offline or whose clock was wrong, is still kept
// for the whole retention period after it arrived.
func deleteOlder(ctx context.Context, conn *pgx.Conn, cutoff time.Time, batch int, pause time.Duration) (int64, error) {
	const q = `DELETE FROM readings WHERE ctid = ANY (ARRAY(
		SELECT ctid FROM readings WHERE received_at < $1 AND ts < $1 LIMIT $2))`
	var total int64
	for {
		tag, err := conn.Exec(ctx, q, cutoff, batch)
		if err != nil {
			return total, fmt.Errorf("retention delete: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) || !sleep(ctx, pause) {
			return total, ctx.Err()
		}
	}
}
