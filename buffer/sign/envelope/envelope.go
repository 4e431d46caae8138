// Package envelope is the wire form of every signed JSON message of the
// fleet: config documents and commands (agent/remote), release manifests
// and update offers (agent/update/release). An envelope is
//
//	{"v":1,"<part>":{...},"sig":"base64"}
//
// where the signature (buffer/sign, under a purpose that names the kind of
// message) covers the exact bytes of the part as they stand in the
// envelope, so nothing is re-encoded before it is verified.
//
// The package seals and opens envelopes; what a part means, and which keys
// are trusted for it, is for its caller.
package envelope

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Version is the "v" of every envelope.
const Version = 1

// Sentinel errors; every error of Open wraps one.
var (
	// ErrSignature: the envelope is unsigned, or no key of the verifier
	// verifies its signature for the purpose.
	ErrSignature = errors.New("signature not verified")
	// ErrMalformed: the envelope does not decode, has another version, or
	// lacks its part.
	ErrMalformed = errors.New("malformed")
)

// Signer signs msg for purpose (*sign.Signer).
type Signer interface {
	Sign(purpose string, msg []byte) []byte
}

// Verifier verifies sig over msg for purpose (*sign.Verifier).
type Verifier interface {
	Verify(purpose string, msg, sig []byte) error
}

// Seal signs raw, a compact JSON value, under purpose and returns the
// envelope holding it as part. part is a constant of the caller (a JSON
// object key without characters that need escaping).
func Seal(part string, raw []byte, purpose string, s Signer) ([]byte, error) {
	var c bytes.Buffer
	if err := json.Compact(&c, raw); err != nil {
		return nil, fmt.Errorf("envelope %s: %w", part, err)
	}
	if !bytes.Equal(c.Bytes(), raw) {
		return nil, fmt.Errorf("envelope %s: the part is not compact JSON", part)
	}
	sig := base64.StdEncoding.EncodeToString(s.Sign(purpose, raw))
	b := make([]byte, 0, len(raw)+len(part)+len(sig)+32)
	b = fmt.Appendf(b, `{"v":%d,"%s":`, Version, part)
	b = append(b, raw...)
	b = append(b, `,"sig":"`...)
	b = append(b, sig...)
	return append(b, `"}`...), nil
}

// Open checks the envelope's version and its signature over part under
// purpose, and returns the part's exact bytes. A nil v verifies nothing:
// the error wraps ErrSignature.
func Open(payload []byte, part, purpose string, v Verifier) (json.RawMessage, error) {
	e, raw, err := decode(payload, part)
	if err != nil {
		return nil, err
	}
	if e.Sig == "" {
		return nil, fmt.Errorf("%w: unsigned", ErrSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(e.Sig)
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64", ErrSignature)
	}
	if v == nil {
		return nil, fmt.Errorf("%w: no keys to verify with", ErrSignature)
	}
	if err := v.Verify(purpose, raw, sig); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return raw, nil
}

// Unverified returns the part without checking the signature, for tools
// that only display a message, or to learn which key or part to check.
// Never act on it.
func Unverified(payload []byte, part string) (json.RawMessage, error) {
	_, raw, err := decode(payload, part)
	return raw, err
}

// DecodeStrict decodes a part into v, refusing fields v does not have, so
// a field a newer sender added is not silently ignored; numbers in an
// `any` stay json.Number.
func DecodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

type wire struct {
	V   int    `json:"v"`
	Sig string `json:"sig"`
}

func decode(payload []byte, part string) (wire, json.RawMessage, error) {
	var e wire
	if err := json.Unmarshal(payload, &e); err != nil {
		return e, nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if e.V != Version {
		return e, nil, fmt.Errorf("%w: envelope version %d (this program reads %d)", ErrMalformed, e.V, Version)
	}
	var parts map[string]json.RawMessage
	if err := json.Unmarshal(payload, &parts); err != nil {
		return e, nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	raw := parts[part]
	if len(raw) == 0 || string(raw) == "null" {
		return e, nil, fmt.Errorf("%w: no %s", ErrMalformed, part)
	}
	return e, raw, nil
}
