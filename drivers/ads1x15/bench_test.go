package ads1x15

import (
	"context"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

// BenchmarkRead is one poll of one channel: periph's conversion (it
// sleeps 1/128 s, so ns/op is that wait), our OS check and read.
func BenchmarkRead(b *testing.B) {
	var ops []i2ctest.IO
	for range b.N + 1 {
		ops = append(ops, convOps(Addr, 0xC383, 0x4000, 0, 0x4000)...)
	}
	s, err := New("adc", &i2ctest.Playback{Ops: ops}, Addr, Opts{Chip: "ads1115", Channels: []Channel{{Input: "0", Field: "soil", Unit: "pct", Scale: -62.5, Offset: 175}}})
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
