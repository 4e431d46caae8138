package ds18b20

import (
	"context"
	"testing"
)

// BenchmarkRead is one poll cycle on the fixture tree (w1_slave parsing;
// on hardware the kernel's 750 ms conversion dominates).
func BenchmarkRead(b *testing.B) {
	for _, root := range []string{"testdata/good", "testdata/newkernel"} {
		b.Run(root[len("testdata/"):], func(b *testing.B) {
			s := New("ds", Opts{SysfsRoot: root})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Read(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
