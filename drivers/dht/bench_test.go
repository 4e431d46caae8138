package dht

import (
	"context"
	"testing"
)

// BenchmarkRead is one poll cycle on the fixture tree: resolve (cached after
// the first read), read and parse both files, range check. The fake clock
// makes the 2 s minimum interval free, so this is the CPU cost only.
func BenchmarkRead(b *testing.B) {
	s, err := New("dht", Opts{Model: DHT22, SysfsRoot: "testdata/good", Clock: newClock()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeFrame is the pure 40-bit decoder.
func BenchmarkDecodeFrame(b *testing.B) {
	f := [5]byte{0x02, 0x8C, 0x01, 0x5F, 0xEE}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeFrame(f, DHT22); err != nil {
			b.Fatal(err)
		}
	}
}
