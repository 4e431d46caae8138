package tally

import (
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// d builds a delivery of seq taken at tsMS and received at recvMS.
func d(seq uint64, tsMS, recvMS int) Delivery {
	return Delivery{Seq: seq, TS: at(tsMS), Recv: at(recvMS)}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		name         string
		floor, final uint64
		ds           []Delivery
		want         Summary
	}{
		{name: "empty run", final: 0, want: Summary{}},
		{name: "nothing delivered", final: 3, want: Summary{Produced: 3, Missing: []Range{{1, 3}}}},
		{
			name: "all once", final: 3,
			ds:   []Delivery{d(1, 0, 5), d(2, 1, 6), d(3, 2, 7)},
			want: Summary{Produced: 3, Delivered: 3},
		},
		{
			name: "duplicates in any order", final: 3,
			ds:   []Delivery{d(3, 2, 7), d(1, 0, 5), d(2, 1, 6), d(1, 0, 9), d(3, 2, 9), d(3, 2, 10)},
			want: Summary{Produced: 3, Delivered: 3, Duplicates: 3, DupRate: 1},
		},
		{
			name: "gaps become ranges", final: 9,
			ds:   []Delivery{d(1, 0, 1), d(4, 0, 1), d(5, 0, 1), d(8, 0, 1)},
			want: Summary{Produced: 9, Delivered: 4, Missing: []Range{{2, 3}, {6, 7}, {9, 9}}},
		},
		{
			name: "seqs past the final one are unexpected", final: 2,
			ds:   []Delivery{d(1, 0, 1), d(2, 0, 1), d(3, 0, 1), d(0, 0, 1)},
			want: Summary{Produced: 2, Delivered: 2, Unexpected: 2},
		},
		{
			name: "seqs start above the floor", floor: 1000, final: 1004,
			ds:   []Delivery{d(1001, 0, 1), d(1003, 0, 1), d(1004, 0, 1), d(1000, 0, 1), d(7, 0, 1)},
			want: Summary{Produced: 4, Delivered: 3, Missing: []Range{{1002, 1002}}, Unexpected: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NewTimeline(tt.floor, tt.final, tt.ds).Summary()
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Summary() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMissingCount(t *testing.T) {
	s := Summary{Missing: []Range{{2, 3}, {6, 6}, {10, 19}}}
	if got := s.MissingCount(); got != 13 {
		t.Fatalf("MissingCount() = %d, want 13", got)
	}
}

func TestRecovery(t *testing.T) {
	// Seqs 1-3 flowed before the fault (ended at 1000 ms); 4-6 were taken
	// during it and arrived late, 7 after it.
	ds := []Delivery{
		d(1, 0, 10), d(2, 100, 110), d(3, 200, 210),
		d(4, 400, 1500), d(5, 900, 1200), d(6, 1000, 1800),
		d(7, 1100, 1900),
		d(5, 900, 2500), // a duplicate arriving later does not count
	}
	tests := []struct {
		name  string
		final uint64
		ds    []Delivery
		since time.Time
		end   time.Time
		want  Recovery
	}{
		{name: "fault with backlog", final: 7, ds: ds, end: at(1000),
			want: Recovery{Target: 6, Backlog: 3, Duration: 800 * time.Millisecond, Complete: true}},
		{name: "already caught up", final: 7, ds: ds, end: at(300),
			want: Recovery{Target: 3, Complete: true}},
		{name: "before any reading", final: 7, ds: ds, end: at(-5),
			want: Recovery{Complete: true}},
		{name: "a gap never filled", final: 3, end: at(1000),
			ds:   []Delivery{d(1, 0, 10), d(3, 200, 1300)},
			want: Recovery{Target: 3, Backlog: 2, Duration: 300 * time.Millisecond, Complete: false}},
		{name: "readings lost just before the end count", final: 5, end: at(1000),
			ds:   []Delivery{d(1, 0, 10), d(2, 100, 110), d(5, 1100, 1200)},
			want: Recovery{Target: 4, Backlog: 2, Complete: false}},
		{name: "nothing taken after the end: the target is the final seq", final: 4, end: at(1000),
			ds:   []Delivery{d(1, 0, 10), d(2, 100, 1500), d(3, 200, 1100), d(4, 900, 1600)},
			want: Recovery{Target: 4, Backlog: 3, Duration: 600 * time.Millisecond, Complete: true}},
		{name: "a gap before since is not this fault's", final: 7, since: at(300), end: at(1000),
			ds:   []Delivery{d(1, 0, 10), d(3, 200, 210), d(4, 400, 1100), d(5, 900, 1300), d(6, 1100, 1400)},
			want: Recovery{Target: 5, Backlog: 2, Duration: 300 * time.Millisecond, Complete: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NewTimeline(0, tt.final, tt.ds).Recovery(tt.since, tt.end)
			if got != tt.want {
				t.Fatalf("Recovery(%v) = %+v, want %+v", tt.end.Sub(t0), got, tt.want)
			}
		})
	}
}

func TestLatencies(t *testing.T) {
	ds := []Delivery{d(1, 0, 30), d(2, 100, 110), d(3, 200, 1200), d(3, 200, 1100), d(4, 300, 320)}
	tl := NewTimeline(0, 4, ds)
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	if got, want := tl.Latencies(), ms(10, 20, 30, 900); !reflect.DeepEqual(got, want) {
		t.Fatalf("Latencies() = %v, want %v", got, want)
	}
	if got, want := tl.Latencies(Window{at(150), at(250)}), ms(10, 20, 30); !reflect.DeepEqual(got, want) {
		t.Fatalf("Latencies(skip 150-250ms) = %v, want %v", got, want)
	}
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single", []time.Duration{7}, 99, 7},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"tiny p is the min", hundred, 0.001, time.Millisecond},
		{"p50 of four rounds up the rank", []time.Duration{1, 2, 3, 4}, 50, 2},
		{"p99 of four is the max", []time.Duration{1, 2, 3, 4}, 99, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Fatalf("Percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestResume(t *testing.T) {
	tl := NewTimeline(0, 4, []Delivery{d(1, 0, 10), d(2, 1100, 1900), d(3, 1200, 1300), d(3, 1200, 1250), d(4, 1300, 1400)})
	tests := []struct {
		name string
		end  time.Time
		want time.Duration
		ok   bool
	}{
		{"earliest arrival of a later reading, duplicates included", at(1000), 250 * time.Millisecond, true},
		{"nothing taken after the end", at(2000), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tl.Resume(tt.end)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Resume() = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestBurst(t *testing.T) {
	tl := NewTimeline(0, 5, []Delivery{d(1, 0, 10), d(2, 100, 1500), d(3, 200, 1600), d(3, 200, 1700), d(4, 300, 2500), d(5, 1100, 3000)})
	tests := []struct {
		name       string
		end, until time.Time
		n          int
		span       time.Duration
	}{
		{"from the first arrival after the end", at(1000), at(2500), 3, time.Second},
		{"nothing arrived", at(3000), at(4000), 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, span := tl.Burst(tt.end, tt.until)
			if n != tt.n || span != tt.span {
				t.Fatalf("Burst() = %d, %v; want %d, %v", n, span, tt.n, tt.span)
			}
		})
	}
}
