package buffer_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Close while appenders run: every Append either succeeded, and its
// reading is there after reopening, or failed with ErrClosed.
func TestCloseDuringAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var acked []uint64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				r := newReading(i)
				err := b.Append(context.Background(), r)
				if errors.Is(err, buffer.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, r.Seq)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	b = openT(t, path, buffer.Options{})
	var stored []uint64
	if err := b.Each(context.Background(), 0, ^uint64(0), func(seq uint64, _ []byte) error {
		stored = append(stored, seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, s := range acked {
		if _, ok := slices.BinarySearch(stored, s); !ok {
			t.Fatalf("acknowledged seq %d missing after Close and reopen", s)
		}
	}
	if len(acked) == 0 {
		t.Fatal("no append succeeded before Close")
	}
}

// Update runs between commits: appends made while it runs are neither lost
// nor rewritten, and the counters stay exact.
func TestUpdateWhileAppending(t *testing.T) {
	ctx := context.Background()
	b := openT(t, filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	appendN(t, b, 0, 3000)
	done := make(chan int)
	go func() {
		n := 0
		for i := 0; i < 200; i++ {
			if err := b.Append(ctx, newReading(i)); err != nil {
				t.Error(err)
				break
			}
			n++
		}
		done <- n
	}()
	n, err := b.Update(ctx, func(r *reading.Reading) bool {
		r.Values[reading.Pressure] = 1000
		return true
	})
	if err != nil || n < 3000 {
		t.Fatalf("Update = %d, %v", n, err)
	}
	appended := <-done
	rep, err := b.Verify(ctx)
	if err != nil || !rep.OK() || rep.Count != uint64(3000+appended) {
		t.Fatalf("Verify = %+v, %v (want %d readings)", rep, err, 3000+appended)
	}
	st, _ := b.Stats()
	if st.Count != rep.Count || st.LiveBytes != rep.LiveBytes {
		t.Fatalf("Stats %+v disagree with Verify %+v", st, rep)
	}
}
