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
