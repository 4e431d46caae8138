package confirm

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestAppendDecodeRoundTrip(t *testing.T) {
	m := Message{ForwarderID: `fwd-"a"`, Seqs: []Range{{48200, 48213}, {48215, 48215}, {MaxSeq, MaxSeq}}}
	b := Append(nil, &m)
	want := `{"v":1,"forwarder_id":"fwd-\"a\"","seqs":[[48200,48213],[48215,48215],[9007199254740992,9007199254740992]]}`
	if string(b) != want {
		t.Fatalf("Append = %s\nwant     %s", b, want)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ForwarderID != m.ForwarderID || !slices.Equal(got.Seqs, m.Seqs) {
		t.Fatalf("Decode = %+v, want %+v", got, m)
	}
	if n := got.Count(); n != 14+1+1 {
		t.Errorf("Count = %d, want 16", n)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", ``, "EOF"},
		{"not json", `ack 1-5`, "invalid character"},
		{"array", `[[1,2]]`, "cannot unmarshal"},
		{"no v", `{"seqs":[[1,2]]}`, `no "v"`},
		{"v2", `{"v":2,"seqs":[[1,2]]}`, "version 2"},
		{"no seqs", `{"v":1}`, "no seqs"},
		{"empty seqs", `{"v":1,"seqs":[]}`, "no seqs"},
		{"one number", `{"v":1,"seqs":[[1]]}`, "has 1 numbers"},
		{"three numbers", `{"v":1,"seqs":[[1,2,3]]}`, "has 3 numbers"},
		{"negative", `{"v":1,"seqs":[[-1,2]]}`, "cannot unmarshal"},
		{"fraction", `{"v":1,"seqs":[[1.5,2]]}`, "cannot unmarshal"},
		{"string seq", `{"v":1,"seqs":[["1",2]]}`, "cannot unmarshal"},
		{"zero", `{"v":1,"seqs":[[0,2]]}`, "range [0,2]"},
		{"reversed", `{"v":1,"seqs":[[5,2]]}`, "range [5,2]"},
		{"above 2^53", `{"v":1,"seqs":[[1,9007199254740993]]}`, "above 2^53"},
		{"overflow", `{"v":1,"seqs":[[1,18446744073709551616]]}`, "cannot unmarshal"},
		{"unsorted", `{"v":1,"seqs":[[5,6],[1,2]]}`, "not after"},
		{"overlapping", `{"v":1,"seqs":[[1,5],[5,6]]}`, "not after"},
		{"trailing data", `{"v":1,"seqs":[[1,2]]} {}`, "data after"},
		{"sig not base64", `{"v":1,"seqs":[[1,2]],"sig":"@@@@"}`, `"sig" is not 64 bytes`},
		{"sig short", `{"v":1,"seqs":[[1,2]],"sig":"AAAA"}`, `"sig" is not 64 bytes`},
		{"sig empty", `{"v":1,"seqs":[[1,2]],"sig":""}`, `"sig" is not 64 bytes`},
		{"sig number", `{"v":1,"seqs":[[1,2]],"sig":5}`, "cannot unmarshal"},
		{"sig url base64", `{"v":1,"seqs":[[1,2]],"sig":"` + strings.Repeat("_", 86) + `=="}`, `"sig" is not 64 bytes`},
		{"too big", `{"v":1,"seqs":[[1,2]],"pad":"` + strings.Repeat("x", MaxPayload) + `"}`, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.in))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode(%.40q) = %v, want ErrInvalid", tc.in, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	m, err := Decode([]byte(`{"v":1,"seqs":[[3,4]],"note":"from a newer forwarder"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Seqs, []Range{{3, 4}}) || m.ForwarderID != "" {
		t.Fatalf("got %+v", m)
	}
}

func TestSetCoalesces(t *testing.T) {
	for _, tc := range []struct {
		name string
		add  []uint64
		want []Range
	}{
		{"empty", nil, []Range{}},
		{"in order", []uint64{1, 2, 3, 5, 6, 9}, []Range{{1, 3}, {5, 6}, {9, 9}}},
		{"duplicates", []uint64{4, 4, 5, 4, 5}, []Range{{4, 5}}},
		{"reverse", []uint64{9, 8, 7, 1}, []Range{{1, 1}, {7, 9}}},
		{"fills a hole", []uint64{1, 3, 2}, []Range{{1, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Set
			for _, q := range tc.add {
				s.Add(q)
			}
			if got := s.Ranges(); !slices.Equal(got, tc.want) {
				t.Fatalf("Ranges = %v, want %v", got, tc.want)
			}
			if s.Len() != len(tc.want) {
				t.Fatalf("Len = %d, want %d", s.Len(), len(tc.want))
			}
		})
	}
}

// TestSetMatchesMap adds random seqs and ranges, in order and out of it,
// and compares the ranges with a plain set of seqs.
func TestSetMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var s Set
		seen := map[uint64]bool{}
		next := uint64(1)
		for range rng.IntN(2000) {
			var r Range
			switch rng.IntN(3) {
			case 0: // the common case: the next seqs of a device
				r = Range{next, next + uint64(rng.IntN(3))}
				next = r.Last + 1 + uint64(rng.IntN(2))
			case 1: // a re-sent old one
				f := uint64(rng.IntN(int(next))) + 1
				r = Range{f, f + uint64(rng.IntN(5))}
			default:
				f := uint64(rng.IntN(5000)) + 1
				r = Range{f, f}
			}
			s.AddRange(r)
			for q := r.First; q <= r.Last; q++ {
				seen[q] = true
			}
		}
		got := s.Ranges()
		var n int
		for i, r := range got {
			if r.First > r.Last || (i > 0 && r.First <= got[i-1].Last+1) {
				t.Fatalf("round %d: ranges not sorted and coalesced: %v", round, got)
			}
			for q := r.First; q <= r.Last; q++ {
				if !seen[q] {
					t.Fatalf("round %d: %d in %v was never added", round, q, r)
				}
				n++
			}
		}
		if n != len(seen) {
			t.Fatalf("round %d: ranges hold %d seqs, added %d", round, n, len(seen))
		}
		if len(got) > 0 {
			if _, err := Decode(Append(nil, &Message{Seqs: got})); err != nil {
				t.Fatalf("round %d: own message does not decode: %v", round, err)
			}
		}
	}
}

func TestSetInOrderStaysSmall(t *testing.T) {
	var s Set
	for q := uint64(1); q <= 100_000; q++ {
		s.Add(q)
	}
	if cap(s.rs) > 1 {
		t.Fatalf("100,000 consecutive seqs held %d ranges of memory, want 1", cap(s.rs))
	}
	s.Reset()
	if s.Len() != 0 {
		t.Fatal("Reset left ranges")
	}
}

func BenchmarkSetAddInOrder(b *testing.B) {
	var s Set
	for i := range b.N {
		s.Add(uint64(i) + 1)
	}
}

func BenchmarkDecode(b *testing.B) {
	msg := Append(nil, &Message{ForwarderID: "fwd-a", Seqs: []Range{{48200, 48213}, {48215, 48215}}})
	b.ReportAllocs()
	for range b.N {
		if _, err := Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}
