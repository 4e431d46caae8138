package scd4x

import (
	"context"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

// BenchmarkRead is one poll of a chip with a measurement ready: our
// data-ready check, periph's check and read_measurement (3 transactions,
// 3 CRCs), on replayed traffic.
func BenchmarkRead(b *testing.B) {
	ops := startOps()
	for range b.N + 1 {
		ops = append(ops, concat(waitOps(0), senseOps(words(500, 0x6667, 0x5EB9)))...)
	}
	s, err := New("scd", wakeNACK{&i2ctest.Playback{Ops: ops}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
