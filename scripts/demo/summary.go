package main

import (
	"fmt"
	"io"
	"sync"
)

type key struct {
	device string
	seq    uint64
}

// Summary tallies readings by (device_id, seq), the pipeline's identity.
type Summary struct {
	Produced   uint64 // seqs the agent assigned (its buffer's floor+1 .. last seq)
	Delivered  int    // distinct (device_id, seq) seen in Kafka
	Duplicates int    // records seen more than once (at-least-once)
	Buffered   int    // produced, not in Kafka yet: still in the agent's buffer
	// Unconfirmed are in Kafka and still in the agent's buffer: the
	// forwarder's confirmation (delivery: kafka) had not arrived when the
	// agent stopped; it sends them again on its next start.
	Unconfirmed int
	Missing     int // produced, not buffered, never seen in Kafka
	Undecoded   int // Kafka records that failed to decode
	DBRows      int // rows in PostgreSQL's readings table (with a database)
	DBMissing   int // delivered to Kafka, not in the table
	dbKnown     bool

	mu       sync.Mutex
	seen     map[key]int
	floor    uint64 // the agent's seqs start above it
	produced uint64 // the last seq it assigned
	buffered map[uint64]bool
	known    bool
}

func newSummary() *Summary { return &Summary{seen: map[key]int{}} }

// Add records one Kafka record and reports whether it was a duplicate.
func (s *Summary) Add(device string, seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key{device, seq}
	s.seen[k]++
	return s.seen[k] > 1
}

// Bad counts an undecodable record.
func (s *Summary) Bad() {
	s.mu.Lock()
	s.Undecoded++
	s.mu.Unlock()
}

// SetProduced tells the summary what the stopped agent produced (the seqs
// floor+1..last of its buffer) and what it still holds.
func (s *Summary) SetProduced(floor, last uint64, buffered map[uint64]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.floor, s.produced, s.buffered, s.known = floor, last, buffered, true
}

// Outstanding is how many produced, unbuffered readings Kafka has not shown yet.
func (s *Summary) Outstanding() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for seq := s.floor + 1; seq <= s.produced; seq++ {
		if !s.buffered[seq] && !s.seenSeq(seq) {
			n++
		}
	}
	return n
}

// seenSeq reports whether any device delivered seq (the demo has one device).
func (s *Summary) seenSeq(seq uint64) bool {
	for k := range s.seen {
		if k.seq == seq {
			return true
		}
	}
	return false
}

// Finish computes the totals.
func (s *Summary) Finish() *Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Delivered, s.Duplicates = len(s.seen), 0
	bySeq := map[uint64]bool{}
	for k, n := range s.seen {
		s.Duplicates += n - 1
		bySeq[k.seq] = true
	}
	if s.known {
		s.Produced, s.Buffered, s.Unconfirmed, s.Missing = s.produced-min(s.floor, s.produced), 0, 0, 0
		for seq := range s.buffered {
			if bySeq[seq] {
				s.Unconfirmed++
			} else {
				s.Buffered++
			}
		}
		for seq := s.floor + 1; seq <= s.produced; seq++ {
			if !s.buffered[seq] && !bySeq[seq] {
				s.Missing++
			}
		}
	}
	return s
}

// SetDB records the rows the sink wrote into PostgreSQL (call after Finish).
func (s *Summary) SetDB(rows int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.DBRows, s.dbKnown = rows, true
	s.DBMissing = max(s.Delivered-rows, 0)
}

// Print writes the summary for a person.
func (s *Summary) Print(w io.Writer) {
	fmt.Fprintln(w, "\nsummary by (device_id, seq):")
	if s.known {
		fmt.Fprintf(w, "  produced by edge-agent      %d\n", s.Produced)
	} else {
		fmt.Fprintln(w, "  produced by edge-agent      unknown (the agent did not stop cleanly)")
	}
	fmt.Fprintf(w, "  delivered to Kafka          %d\n", s.Delivered)
	fmt.Fprintf(w, "  duplicates (at-least-once)  %d\n", s.Duplicates)
	if s.known {
		fmt.Fprintf(w, "  still in the agent's buffer %d (sent on its next start)\n", s.Buffered)
		if s.Unconfirmed > 0 {
			fmt.Fprintf(w, "  in Kafka, not yet confirmed %d (still buffered too: sent again on the agent's next start)\n", s.Unconfirmed)
		}
		fmt.Fprintf(w, "  missing                     %d\n", s.Missing)
	}
	if s.dbKnown {
		fmt.Fprintf(w, "  rows in PostgreSQL          %d (table readings, one per (device_id, seq))\n", s.DBRows)
		if s.DBMissing > 0 {
			fmt.Fprintf(w, "  in Kafka, not in PostgreSQL %d\n", s.DBMissing)
		}
	}
	if s.Undecoded > 0 {
		fmt.Fprintf(w, "  undecodable records         %d\n", s.Undecoded)
	}
}
