package mqttpub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
)

// maxDeleteBatch bounds how many delivered readings one Delete removes,
// and how many may wait for the deleter before the acker stops taking
// PUBACKs (they would be sent again after a crash).
const maxDeleteBatch = 1000

// deleteTimeout bounds one Delete (an fsync on an SD card).
const deleteTimeout = 10 * time.Second

// deleter deletes delivered readings from the queue, one batch at a time,
// until stop is closed and nothing is left to delete. A failed delete
// releases its readings (they are sent again) and ends the current session,
// so the publisher reconnects and retries instead of waiting for ever; a
// closed buffer ends Run.
func (p *Publisher) deleter(stop <-chan struct{}) error {
	for {
		seqs := p.led.take(maxDeleteBatch)
		if len(seqs) == 0 {
			select {
			case <-p.led.work:
				continue
			case <-stop:
				if seqs = p.led.take(maxDeleteBatch); len(seqs) == 0 {
					return nil
				}
			}
		}
		// Not cancelled by shutdown: a delivered reading is deleted, so it
		// is not sent again after the restart.
		ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
		err := p.q.Delete(ctx, seqs...)
		cancel()
		p.led.deleted(seqs)
		p.prog.touch()
		if err != nil {
			if errors.Is(err, buffer.ErrClosed) {
				return fmt.Errorf("%w: delete: %w", errQueue, err)
			}
			p.deleteFailed(len(seqs), err)
			continue
		}
		p.delFails.Store(0)
		add(p.o.Metrics.Delivered, len(seqs))
	}
}

// deleteFailed counts and logs a failed delete and ends the session.
func (p *Publisher) deleteFailed(n int, err error) {
	inc(p.o.Metrics.DeleteErrors)
	fails := p.delFails.Add(1)
	if fails == 1 || fails%10 == 0 {
		p.log.Error("buffer delete failed; reconnecting to send those readings again", "err", err,
			"readings", n, "failures_in_a_row", fails)
	}
	p.endSession(fmt.Errorf("%w: %w", ErrDelete, err))
}
