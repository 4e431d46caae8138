package buffer_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// The life of a reading in the buffer: Append stores it durably and gives
// it its seq, the publisher Peeks the oldest records and Deletes each one
// once its delivery is confirmed. A new buffer's seqs start above its
// floor (about the clock in Unix microseconds), so the example prints them
// relative to it.
func Example() {
	dir, err := os.MkdirTemp("", "buffer-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	b, err := buffer.Open(filepath.Join(dir, "buffer.db"), buffer.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	st, err := b.Stats()
	if err != nil {
		log.Fatal(err)
	}
	floor := st.SeqFloor

	for _, t := range []float64{21.5, 21.6} {
		r := reading.Reading{
			DeviceID: "pi-greenhouse-1", Sensor: "sim-1", Kind: "sim",
			TS: time.Now(), TimeSynced: true,
			Values: map[string]float64{reading.Temperature: t},
		}
		if err := b.Append(ctx, &r); err != nil { // on disk when it returns
			log.Fatal(err)
		}
		fmt.Println("stored seq floor +", r.Seq-floor)
	}

	recs, err := b.Peek(0, 100) // oldest first; Payload is the wire format
	if err != nil {
		log.Fatal(err)
	}
	for _, rec := range recs {
		r, err := reading.Decode(rec.Payload)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("to publish: floor +", rec.Seq-floor, rec.Sensor, r.Values[reading.Temperature])
	}

	if err := b.Delete(ctx, recs[0].Seq); err != nil { // confirmed: gone for good
		log.Fatal(err)
	}
	if st, err = b.Stats(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("waiting:", st.Count, "last seq: floor +", st.LastSeq-floor)
	// Output:
	// stored seq floor + 1
	// stored seq floor + 2
	// to publish: floor + 1 sim-1 21.5
	// to publish: floor + 2 sim-1 21.6
	// waiting: 1 last seq: floor + 2
}
