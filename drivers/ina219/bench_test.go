package ina219

import (
	"context"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

// BenchmarkRead is one poll: four register reads on replayed traffic.
func BenchmarkRead(b *testing.B) {
	ops := openOps(Addr, 0x1062)
	for range b.N + 1 {
		ops = append(ops, readOps(Addr, 4000, 3000<<3|2, 4000, 2400)...)
	}
	s, err := New("ina", &i2ctest.Playback{Ops: ops}, Addr, DefaultOpts)
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
