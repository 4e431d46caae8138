package bh1750

import (
	"context"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

// BenchmarkRead is one poll in low resolution: the mode, the datasheet's
// maximum 24 ms wait (so ns/op is that wait), the count.
func BenchmarkRead(b *testing.B) {
	ops := openOps(Addr, 0x13)
	for range b.N + 1 {
		ops = append(ops, readOps(Addr, 0x13, 0x8390)...)
	}
	s, err := New("lux", &i2ctest.Playback{Ops: ops}, Addr, Opts{Resolution: "low"})
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
