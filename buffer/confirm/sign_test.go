package confirm_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

func keys(t *testing.T) (fwd, other *sign.Signer, ring *sign.Verifier) {
	t.Helper()
	fwd, err := sign.LoadSigner("../sign/testdata/forwarder-a.key")
	if err != nil {
		t.Fatal(err)
	}
	other, err = sign.LoadSigner("../sign/testdata/other.key")
	if err != nil {
		t.Fatal(err)
	}
	ring, err = sign.LoadVerifier("../sign/testdata/keyring.pub")
	if err != nil {
		t.Fatal(err)
	}
	return fwd, other, ring
}

func TestSignedRoundTrip(t *testing.T) {
	fwd, _, ring := keys(t)
	m := confirm.Message{ForwarderID: "fwd-a", Seqs: []confirm.Range{{48200, 48213}, {48215, 48215}}}
	confirm.Sign(fwd, "pi-1", &m)
	b := confirm.Append(nil, &m)
	if !bytes.HasPrefix(b, []byte(`{"v":1,"forwarder_id":"fwd-a","seqs":[[48200,48213],[48215,48215]],"sig":"`)) {
		t.Fatalf("wire form %s", b)
	}
	got, err := confirm.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sig, m.Sig) || !slices.Equal(got.Seqs, m.Seqs) {
		t.Fatalf("Decode = %+v, want %+v", got, m)
	}
	if err := confirm.Verify(ring, "pi-1", &got); err != nil {
		t.Fatal(err)
	}
}

func TestSignedCovers(t *testing.T) {
	fwd, other, ring := keys(t)
	signFor := func(s *sign.Signer, device string, m confirm.Message) confirm.Message {
		confirm.Sign(s, device, &m)
		return m
	}
	genuine := signFor(fwd, "pi-1", confirm.Message{ForwarderID: "fwd-a", Seqs: []confirm.Range{{100, 200}}})
	moved := genuine
	moved.Seqs = []confirm.Range{{100, 9007199254740992}}
	renamed := genuine
	renamed.ForwarderID = "fwd-b"
	unsigned := genuine
	unsigned.Sig = nil
	for _, tc := range []struct {
		name   string
		device string
		m      confirm.Message
		want   error
	}{
		{"another device", "pi-2", genuine, errBadSig},
		{"device prefix", "pi-", genuine, errBadSig},
		{"widened ranges", "pi-1", moved, errBadSig},
		{"other forwarder id", "pi-1", renamed, errBadSig},
		{"unknown key", "pi-1", signFor(other, "pi-1", genuine), errBadSig},
		{"unsigned", "pi-1", unsigned, confirm.ErrUnsigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Through the wire, as a device gets it.
			m, err := confirm.Decode(confirm.Append(nil, &tc.m))
			if err != nil {
				t.Fatal(err)
			}
			if err := confirm.Verify(ring, tc.device, &m); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

var errBadSig = sign.ErrBadSignature // a short name for the table

// TestSignedBytes pins what the signature covers: changing it breaks every
// agent in the field.
func TestSignedBytes(t *testing.T) {
	m := confirm.Message{ForwarderID: `fwd-"a"`, Seqs: []confirm.Range{{1, 5}, {7, 7}}, Sig: []byte("ignored")}
	want := `{"device_id":"pi\u003c1\u003e","forwarder_id":"fwd-\"a\"","seqs":[[1,5],[7,7]]}`
	if got := string(confirm.Signed("pi<1>", &m)); got != want {
		t.Fatalf("Signed = %s\nwant     %s", got, want)
	}
}

// decodeV1 is Decode as version 1 shipped it, before signatures (the
// agents a fleet runs until they are upgraded). It is kept to prove that
// those agents read what a signing forwarder sends.
func decodeV1(b []byte) ([]confirm.Range, error) {
	var w struct {
		V           *int       `json:"v"`
		ForwarderID string     `json:"forwarder_id"`
		Seqs        [][]uint64 `json:"seqs"`
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&w); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("data after the JSON object")
	}
	if w.V == nil || *w.V != 1 || len(w.Seqs) == 0 {
		return nil, fmt.Errorf("version %v or no seqs", w.V)
	}
	var rs []confirm.Range
	for _, p := range w.Seqs {
		if len(p) != 2 || p[0] == 0 || p[0] > p[1] || p[1] > confirm.MaxSeq {
			return nil, fmt.Errorf("range %v", p)
		}
		rs = append(rs, confirm.Range{First: p[0], Last: p[1]})
	}
	return rs, nil
}

func TestVersion1AgentsReadSigned(t *testing.T) {
	fwd, _, _ := keys(t)
	m := confirm.Message{ForwarderID: "fwd-a", Seqs: []confirm.Range{{3, 9}, {12, 12}}}
	confirm.Sign(fwd, "pi-1", &m)
	rs, err := decodeV1(confirm.Append(nil, &m))
	if err != nil {
		t.Fatalf("a version 1 agent refuses a signed confirmation: %v", err)
	}
	if !slices.Equal(rs, m.Seqs) {
		t.Fatalf("version 1 agent read %v, want %v", rs, m.Seqs)
	}
}

func BenchmarkVerify(b *testing.B) {
	fwd, err := sign.LoadSigner("../sign/testdata/forwarder-a.key")
	if err != nil {
		b.Fatal(err)
	}
	ring, err := sign.LoadVerifier("../sign/testdata/keyring.pub")
	if err != nil {
		b.Fatal(err)
	}
	m := confirm.Message{ForwarderID: "fwd-a", Seqs: []confirm.Range{{48200, 48213}, {48215, 48215}}}
	confirm.Sign(fwd, "pi-1", &m)
	wire := confirm.Append(nil, &m)
	b.ReportAllocs()
	for range b.N {
		got, err := confirm.Decode(wire)
		if err != nil {
			b.Fatal(err)
		}
		if err := confirm.Verify(ring, "pi-1", &got); err != nil {
			b.Fatal(err)
		}
	}
}
