// Package sign signs and verifies messages with Ed25519, for every signed
// thing the agent and the cloud exchange: confirmations, and later fleet
// config documents, commands and release manifests.
//
// Every signature covers a purpose string besides the message, so a
// signature made for one purpose ("sensorpipe confirm v2") never verifies
// for another, even when the bytes happen to be the same and the same key
// signed both. The signed bytes are the purpose, one zero byte, and the
// message: plain Ed25519 (RFC 8032, not the ctx variant), so any Ed25519
// tool can check a signature, for example:
//
//	printf 'sensorpipe confirm v2\0%s' "$msg" > signed
//	openssl pkeyutl -verify -pubin -inkey confirm-keys.pem -rawin -in signed -sigfile sig
//
// Keys are files in the formats openssl writes. A private key is one PEM
// "PRIVATE KEY" block (PKCS#8), as `openssl genpkey -algorithm ed25519`
// writes it; a keys file is one or more PEM "PUBLIC KEY" blocks (PKIX), as
// `openssl pkey -pubout` writes them, concatenated: a Verifier accepts a
// signature by any of them, so keys rotate by adding the new public key
// everywhere, then switching the signer, then removing the old key.
//
// The package holds keys and checks signatures; it does not decide what a
// message means, whether it is fresh, or which keys to trust for what.
package sign

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sentinel errors; callers branch on them with errors.Is.
var (
	// ErrBadSignature is returned by Verify when no key of the keyring
	// verifies the signature over the purpose and the message.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrKeyFile is wrapped by every error about the content of a key
	// file (a file that cannot be read wraps the os error instead).
	ErrKeyFile = errors.New("bad key file")
)

// MaxPurpose is the longest purpose string, in bytes.
const MaxPurpose = 255

// Signer signs messages with one Ed25519 private key. It is safe for
// concurrent use.
type Signer struct {
	key ed25519.PrivateKey
}

// LoadSigner reads an Ed25519 private key from a PEM PKCS#8 file, as
// `openssl genpkey -algorithm ed25519 -out FILE` writes it. Errors name
// the file and never show key material.
func LoadSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	s, err := ParseSigner(b)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return s, nil
}

// ParseSigner parses an Ed25519 private key in PEM PKCS#8 form.
func ParseSigner(pemBytes []byte) (*Signer, error) {
	blk, rest := pem.Decode(pemBytes)
	switch {
	case blk == nil:
		return nil, fmt.Errorf("%w: no PEM block (want a PRIVATE KEY, as openssl genpkey -algorithm ed25519 writes)", ErrKeyFile)
	case blk.Type != "PRIVATE KEY":
		return nil, fmt.Errorf("%w: PEM block %q, want \"PRIVATE KEY\" (PKCS#8, as openssl genpkey -algorithm ed25519 writes)", ErrKeyFile, blk.Type)
	case len(bytes.TrimSpace(rest)) > 0:
		if b, _ := pem.Decode(rest); b != nil {
			return nil, fmt.Errorf("%w: more than one PEM block; a private key file holds one key", ErrKeyFile)
		}
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: a %T, want an Ed25519 key", ErrKeyFile, k)
	}
	return &Signer{key: ek}, nil
}

// Generate makes a new random key, for demos and tests; production keys
// come from openssl (see the package comment).
func Generate() (*Signer, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return &Signer{key: k}, nil
}

// Sign returns the signature over purpose and msg. It panics if purpose is
// not valid (empty, longer than MaxPurpose, or with a zero byte): purposes
// are constants of the program, so that is a programming error.
func (s *Signer) Sign(purpose string, msg []byte) []byte {
	mustPurpose(purpose)
	return ed25519.Sign(s.key, signed(purpose, msg))
}

// PrivatePEM returns the private key as a PEM PKCS#8 block, the format
// LoadSigner reads. Write it to a file only readable by its owner.
func (s *Signer) PrivatePEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(s.key)
	if err != nil {
		panic(err) // cannot fail for an Ed25519 key
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// PublicPEM returns the public key as a PEM "PUBLIC KEY" block, the format
// LoadVerifier reads.
func (s *Signer) PublicPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(s.key.Public())
	if err != nil {
		panic(err) // cannot fail for an Ed25519 key
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// String names the key type and never shows the key, so a config dump or a
// log line holding a Signer leaks nothing.
func (s *Signer) String() string { return "ed25519 private key [redacted]" }

// GoString redacts the key for %#v.
func (s *Signer) GoString() string { return s.String() }

// Verifier returns a keyring holding only s's public key.
func (s *Signer) Verifier() *Verifier {
	return &Verifier{keys: []ed25519.PublicKey{s.key.Public().(ed25519.PublicKey)}}
}

// Verifier checks signatures against a keyring of Ed25519 public keys. It
// is safe for concurrent use.
type Verifier struct {
	keys []ed25519.PublicKey
}

// LoadVerifier reads a keyring from a file of one or more PEM "PUBLIC KEY"
// blocks, as `openssl pkey -in KEY -pubout` writes them (concatenate the
// outputs for several keys). Text between blocks is ignored, so a file may
// carry notes; any other PEM block, a private key above all, is an error.
func LoadVerifier(path string) (*Verifier, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public keys: %w", err)
	}
	v, err := ParseVerifier(b)
	if err != nil {
		return nil, fmt.Errorf("public keys %s: %w", path, err)
	}
	return v, nil
}

// ParseVerifier parses a keyring of PEM "PUBLIC KEY" blocks.
func ParseVerifier(pemBytes []byte) (*Verifier, error) {
	var v Verifier
	for rest := pemBytes; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		n := len(v.keys) + 1
		if blk.Type != "PUBLIC KEY" {
			hint := ""
			if strings.Contains(blk.Type, "PRIVATE") {
				hint = " (a private key does not belong here: give the public key, openssl pkey -in KEY -pubout)"
			}
			return nil, fmt.Errorf("%w: PEM block %d is %q, want \"PUBLIC KEY\"%s", ErrKeyFile, n, blk.Type, hint)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: key %d: %w", ErrKeyFile, n, err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: key %d is a %T, want an Ed25519 key", ErrKeyFile, n, k)
		}
		v.keys = append(v.keys, ek)
	}
	if len(v.keys) == 0 {
		return nil, fmt.Errorf("%w: no PEM \"PUBLIC KEY\" block (as openssl pkey -pubout writes)", ErrKeyFile)
	}
	return &v, nil
}

// Len is the number of keys in the keyring.
func (v *Verifier) Len() int { return len(v.keys) }

// Verify reports whether sig is a signature over purpose and msg by one of
// the keyring's keys: nil if so, an error wrapping ErrBadSignature if not.
func (v *Verifier) Verify(purpose string, msg, sig []byte) error {
	if err := checkPurpose(purpose); err != nil {
		return err
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadSignature, len(sig), ed25519.SignatureSize)
	}
	m := signed(purpose, msg)
	for _, k := range v.keys {
		if ed25519.Verify(k, m, sig) {
			return nil
		}
	}
	return fmt.Errorf("%w with any of %d keys", ErrBadSignature, len(v.keys))
}

func signed(purpose string, msg []byte) []byte {
	b := make([]byte, 0, len(purpose)+1+len(msg))
	b = append(b, purpose...)
	b = append(b, 0)
	return append(b, msg...)
}

func checkPurpose(p string) error {
	if p == "" || len(p) > MaxPurpose || strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("sign: invalid purpose %q (1 to %d bytes, no zero byte)", p, MaxPurpose)
	}
	return nil
}

func mustPurpose(p string) {
	if err := checkPurpose(p); err != nil {
		panic(err)
	}
}
