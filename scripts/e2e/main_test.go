package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/scripts/e2e/internal/tally"
)

func TestSubtract(t *testing.T) {
	r := func(a, b uint64) tally.Range { return tally.Range{From: a, To: b} }
	tests := []struct {
		name string
		rs   []tally.Range
		hole tally.Range
		want []tally.Range
	}{
		{"disjoint", []tally.Range{r(1, 3), r(10, 12)}, r(5, 8), []tally.Range{r(1, 3), r(10, 12)}},
		{"hole covers a range", []tally.Range{r(1, 3), r(5, 6)}, r(4, 8), []tally.Range{r(1, 3)}},
		{"hole inside a range splits it", []tally.Range{r(1, 10)}, r(4, 6), []tally.Range{r(1, 3), r(7, 10)}},
		{"hole overlaps the end", []tally.Range{r(1, 5)}, r(4, 9), []tally.Range{r(1, 3)}},
		{"hole overlaps the start", []tally.Range{r(5, 9)}, r(1, 6), []tally.Range{r(7, 9)}},
		{"nothing missing", nil, r(1, 2), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := subtract(tt.rs, tt.hole); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("subtract(%v, %v) = %v, want %v", tt.rs, tt.hole, got, tt.want)
			}
		})
	}
}

func TestSensorPlan(t *testing.T) {
	tests := []struct {
		rate     float64
		n        int
		interval time.Duration
	}{
		{80, 4, 50 * time.Millisecond},
		{200, 4, 20 * time.Millisecond},
		{400, 8, 20 * time.Millisecond},
		{1000, 20, 20 * time.Millisecond},
		{10, 4, 400 * time.Millisecond},
	}
	for _, tt := range tests {
		n, iv := sensorPlan(tt.rate)
		if n != tt.n || iv != tt.interval {
			t.Errorf("sensorPlan(%v) = %d sensors every %v, want %d every %v", tt.rate, n, iv, tt.n, tt.interval)
		}
	}
}

func TestRates(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	var ds []tally.Delivery
	for i := range 11 { // a reading every 100ms, each arriving 20ms later
		ts := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		ds = append(ds, tally.Delivery{Seq: uint64(i + 1), TS: ts, Recv: ts.Add(20 * time.Millisecond)})
	}
	ds = append(ds, tally.Delivery{Seq: 3, TS: ds[2].TS, Recv: t0.Add(5 * time.Second)}) // a late duplicate
	taken, delivered := rates(ds, nil)
	if taken != 10 || delivered != 10 {
		t.Fatalf("rates = %v taken/s, %v delivered/s; want 10 and 10", taken, delivered)
	}
	drain := &fault{Start: t0.Add(550 * time.Millisecond)} // only seqs 1..6 count
	if taken, _ := rates(ds, drain); taken != 10 {
		t.Fatalf("rates before a drain = %v taken/s, want 10", taken)
	}
}

func TestDuplicatesPerFault(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	ds := []tally.Delivery{
		{Seq: 1, Recv: at(1)}, {Seq: 2, Recv: at(2)},
		{Seq: 1, Recv: at(5)}, // copy during the fault
		{Seq: 2, Recv: at(6)}, // copy during the fault
		{Seq: 3, Recv: at(7)},
		{Seq: 1, Recv: at(20)}, // copy after it settled
	}
	dups := duplicateArrivals(ds)
	if len(dups) != 3 {
		t.Fatalf("duplicateArrivals = %v, want 3 copies", dups)
	}
	for _, tt := range []struct {
		from, to int
		want     int
	}{{4, 10, 2}, {5, 5, 1}, {0, 30, 3}, {8, 19, 0}, {20, 20, 1}} {
		if got := countWithin(dups, at(tt.from), at(tt.to)); got != tt.want {
			t.Errorf("countWithin(%ds..%ds) = %d, want %d", tt.from, tt.to, got, tt.want)
		}
	}
}
