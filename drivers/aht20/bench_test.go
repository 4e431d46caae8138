package aht20

import (
	"context"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

// BenchmarkRead is one poll: trigger, periph's 80 ms wait (so ns/op is
// that wait), the 7-byte frame and its CRC, on replayed traffic.
func BenchmarkRead(b *testing.B) {
	ops := openOps(stReady, stReady)
	for range b.N + 1 {
		ops = append(ops, readOps(frame(stReady, 0x80000, 0x66666))...)
	}
	s, err := New("aht", &i2ctest.Playback{Ops: ops})
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
