package main

import (
	"reflect"
	"strings"
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

func TestCountKillDups(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	k := &kill{Forwarder: "a", Window: 4, Started: at(0), At: at(1000), Redelivered: 3}
	restarted, settled := at(6000), at(20000)
	off := int64(0)
	rec := func(seq uint64, fwd string, ms int) copyRec {
		off++
		return copyRec{Seq: seq, Fwd: fwd, Offset: off, Recv: at(ms)}
	}
	cs := []copyRec{
		rec(1, "a", -500), // an earlier incarnation's record: not the killed one's
		rec(10, "a", 100), // the killed incarnation wrote 10..14
		rec(11, "b", 150), // the other forwarder
		rec(12, "a", 200),
		rec(13, "a", 900),
		rec(14, "a", 1003), // written just before the kill, received just after
		rec(11, "b", 800),  // a copy before the kill: not the kill's
		rec(14, "b", 3000), // the agent re-sent 14 through b while a was dead
		rec(13, "a", 6100), // the successor: the broker redelivers 13 and 15 (15 was never written), then 12 comes from a re-send
		rec(15, "a", 6100),
		rec(16, "a", 6150), // the third redelivered message: fresh, not a copy
		rec(12, "a", 9000),
		rec(10, "b", 25000), // after the fault settled
	}
	got := countKillDups(cs, k, restarted, settled)
	want := killDups{Window: 4, Redelivered: 1, Resent: 2}
	if got != want {
		t.Fatalf("countKillDups = %+v, want %+v", got, want)
	}
	// Without the successor's redelivered count, every copy it wrote is
	// taken as the broker's: an upper bound for the check.
	k.Redelivered = -1
	if got, want := countKillDups(cs, k, restarted, settled), (killDups{Window: 4, Redelivered: 2, Resent: 1}); got != want {
		t.Fatalf("countKillDups without the redelivered count = %+v, want %+v", got, want)
	}
}

func TestKillLines(t *testing.T) {
	f := faultResult{fault: fault{Kill: &kill{Window: 200, InFlight: 200, InKafka: 400, Produced: 202, Confirmed: 202}}, Dups: 205,
		KillDups: &killDups{Window: 200, Redelivered: 198, Resent: 3}}
	got := strings.Join(f.killLines("kafka"), "\n")
	for _, want := range []string{"200 of 200 in flight (window full)", "198 written and not yet PUBACKed", "198 sent again by the broker",
		"within the in-flight window of 200", "3 re-sent by the agent", "4 other copies"} {
		if !strings.Contains(got, want) {
			t.Errorf("killLines lacks %q:\n%s", want, got)
		}
	}
	f.KillDups.Redelivered, f.Kill.InFlight = 201, 150
	got = strings.Join(f.killLines("broker"), "\n")
	for _, want := range []string{"(window NOT full)", "OVER the in-flight window"} {
		if !strings.Contains(got, want) {
			t.Errorf("killLines lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "confirmation") {
		t.Errorf("killLines speaks of confirmations with delivery=broker:\n%s", got)
	}
	if (faultResult{}).killLines("kafka") != nil {
		t.Error("killLines of a fault without a kill: want none")
	}
}
