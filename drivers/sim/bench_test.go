package sim

import (
	"context"
	"testing"
)

// BenchmarkRead is one poll cycle of the simulated sensor.
func BenchmarkRead(b *testing.B) {
	s := New("sim-1", Opts{Seed: 1})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
