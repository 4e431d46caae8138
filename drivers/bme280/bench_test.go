package bme280

import (
	"context"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

// BenchmarkRead is one forced-mode poll cycle on replayed bus traffic
// (3 transactions). bmxx80 sleeps the datasheet's typical measurement time
// (8 ms at 1x oversampling), so ns/op is that wait; allocs/op is ours
// plus bmxx80's.
func BenchmarkRead(b *testing.B) {
	data := measurement(adcP, adcT, adcH)
	ops := openOps(ChipIDBME280, datasheetCalib, 1)
	for range b.N + 1 {
		ops = append(ops, readOps(ChipIDBME280, 1, data)...)
	}
	bus := &i2ctest.Playback{Ops: ops}
	s, err := New("bme", bus, addr, Opts{Oversampling: 1})
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
