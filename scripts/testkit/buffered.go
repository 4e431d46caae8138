package testkit

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
)

// BufferedSeqs opens the agent's buffer at path read-only, once the agent
// stopped, and returns the seqs still stored in it with its stats
// (SeqFloor, LastSeq): what a loss check holds the readings received
// against, since a seq not received must still be there.
func BufferedSeqs(path string) (map[uint64]bool, buffer.Stats, error) {
	b, err := buffer.OpenReadOnly(path, 5*time.Second)
	if err != nil {
		return nil, buffer.Stats{}, fmt.Errorf("open the agent's buffer: %w", err)
	}
	defer b.Close()
	st, err := b.Stats()
	if err != nil {
		return nil, st, err
	}
	left := map[uint64]bool{}
	err = b.Each(context.Background(), 0, math.MaxUint64, func(seq uint64, _ []byte) error {
		left[seq] = true
		return nil
	})
	return left, st, err
}
