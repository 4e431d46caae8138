package sign_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/sign"
)

const purpose = "sensorpipe test v1"

func loadSigner(t *testing.T, name string) *sign.Signer {
	t.Helper()
	s, err := sign.LoadSigner(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func loadVerifier(t *testing.T, name string) *sign.Verifier {
	t.Helper()
	v, err := sign.LoadVerifier(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestOpenSSLKeys signs with keys openssl generated and verifies with the
// public keys openssl derived, one and several per file.
func TestOpenSSLKeys(t *testing.T) {
	a, b := loadSigner(t, "forwarder-a.key"), loadSigner(t, "forwarder-b.key")
	ring := loadVerifier(t, "keyring.pub")
	if ring.Len() != 2 {
		t.Fatalf("keyring.pub holds %d keys, want 2", ring.Len())
	}
	msg := []byte(`{"device_id":"pi-1"}`)
	for name, s := range map[string]*sign.Signer{"a": a, "b": b} {
		if err := ring.Verify(purpose, msg, s.Sign(purpose, msg)); err != nil {
			t.Errorf("key %s with the rotation keyring: %v", name, err)
		}
	}
	onlyA := loadVerifier(t, "forwarder-a.pub")
	if err := onlyA.Verify(purpose, msg, b.Sign(purpose, msg)); !errors.Is(err, sign.ErrBadSignature) {
		t.Errorf("key b verified with a's public key alone: %v", err)
	}
	if !bytes.Equal(a.PublicPEM(), must(os.ReadFile("testdata/forwarder-a.pub"))) {
		t.Error("PublicPEM differs from openssl pkey -pubout")
	}
	if !bytes.Equal(a.PrivatePEM(), must(os.ReadFile("testdata/forwarder-a.key"))) {
		t.Error("PrivatePEM differs from openssl genpkey")
	}
}

// TestOpenSSLSignature verifies a signature openssl made over the purpose,
// a zero byte and the message (openssl pkeyutl -sign -rawin), so operators
// can sign and check with standard tools.
func TestOpenSSLSignature(t *testing.T) {
	v := loadVerifier(t, "forwarder-a.pub")
	sig := must(os.ReadFile("testdata/openssl.sig"))
	if err := v.Verify(purpose, []byte("hello"), sig); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(purpose, []byte("hellO"), sig); !errors.Is(err, sign.ErrBadSignature) {
		t.Fatalf("changed message: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	a := loadSigner(t, "forwarder-a.key")
	ring := loadVerifier(t, "keyring.pub")
	msg := []byte("device pi-1 seqs 1-9")
	good := a.Sign(purpose, msg)
	flipped := bytes.Clone(good)
	flipped[10] ^= 1
	for _, tc := range []struct {
		name    string
		purpose string
		msg     []byte
		sig     []byte
	}{
		{"other key", purpose, msg, loadSigner(t, "other.key").Sign(purpose, msg)},
		{"other purpose", "sensorpipe fleet config v1", msg, good},
		{"purpose prefix", "sensorpipe test", msg, good},
		{"purpose moved into message", "sensorpipe", []byte(" test v1\x00" + string(msg)), good},
		{"changed message", purpose, []byte("device pi-2 seqs 1-9"), good},
		{"empty message", purpose, nil, good},
		{"flipped bit", purpose, msg, flipped},
		{"truncated", purpose, msg, good[:63]},
		{"too long", purpose, msg, append(bytes.Clone(good), 0)},
		{"none", purpose, msg, nil},
		{"zeros", purpose, msg, make([]byte, 64)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ring.Verify(tc.purpose, tc.msg, tc.sig); !errors.Is(err, sign.ErrBadSignature) {
				t.Fatalf("Verify = %v, want ErrBadSignature", err)
			}
		})
	}
	if err := ring.Verify(purpose, msg, good); err != nil {
		t.Fatalf("the genuine signature: %v", err)
	}
}

func TestBadPurpose(t *testing.T) {
	v := loadVerifier(t, "forwarder-a.pub")
	for _, p := range []string{"", "a\x00b", strings.Repeat("p", sign.MaxPurpose+1)} {
		if err := v.Verify(p, nil, make([]byte, 64)); err == nil || errors.Is(err, sign.ErrBadSignature) {
			t.Errorf("Verify(purpose %q) = %v, want a purpose error", p, err)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Sign(purpose %q) did not panic", p)
				}
			}()
			loadSigner(t, "forwarder-a.key").Sign(p, nil)
		}()
	}
}

func TestLoadSignerErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"forwarder-a.pub", `"PUBLIC KEY", want "PRIVATE KEY"`},
		{"truncated.key", "no PEM block"},
		{"p256.key", "want an Ed25519 key"},
		{"ed448.key", "PKCS#8"},
		{"empty.pub", "no PEM block"},
		{"keyring.pub", `"PUBLIC KEY"`},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			_, err := sign.LoadSigner(path)
			if !errors.Is(err, sign.ErrKeyFile) {
				t.Fatalf("LoadSigner = %v, want ErrKeyFile", err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s and say %q", err, path, tc.want)
			}
		})
	}
	_, err := sign.LoadSigner("testdata/missing.key")
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "testdata/missing.key") {
		t.Errorf("missing file: %v", err)
	}
	two := filepath.Join(t.TempDir(), "two.key")
	os.WriteFile(two, append(must(os.ReadFile("testdata/forwarder-a.key")), must(os.ReadFile("testdata/forwarder-b.key"))...), 0o600)
	if _, err := sign.LoadSigner(two); !errors.Is(err, sign.ErrKeyFile) || !strings.Contains(err.Error(), "more than one") {
		t.Errorf("two private keys in one file: %v", err)
	}
}

func TestLoadVerifierErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"forwarder-a.key", "a private key does not belong here"},
		{"mixed.pub", `PEM block 2 is "PRIVATE KEY"`},
		{"p256.pub", "key 1 is a *ecdsa.PublicKey"},
		{"empty.pub", "no PEM"},
		{"bad-base64.pub", "no PEM"},
		{"truncated.key", "no PEM"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			_, err := sign.LoadVerifier(path)
			if !errors.Is(err, sign.ErrKeyFile) {
				t.Fatalf("LoadVerifier = %v, want ErrKeyFile", err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s and say %q", err, path, tc.want)
			}
			if strings.Contains(err.Error(), "MC4CAQAw") {
				t.Errorf("error shows key material: %q", err)
			}
		})
	}
	if _, err := sign.LoadVerifier("testdata/missing.pub"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestNotesBetweenKeys: a keys file may carry a note per key.
func TestNotesBetweenKeys(t *testing.T) {
	f := "# forwarder A, since 2026-12\n" + string(must(os.ReadFile("testdata/forwarder-a.pub"))) +
		"\n# forwarder B (rotation)\n" + string(must(os.ReadFile("testdata/forwarder-b.pub")))
	v, err := sign.ParseVerifier([]byte(f))
	if err != nil || v.Len() != 2 {
		t.Fatalf("ParseVerifier = %v, %d keys; want 2", err, v.Len())
	}
}

func TestSignerNeverPrints(t *testing.T) {
	s := loadSigner(t, "forwarder-a.key")
	cfg := struct{ Key *sign.Signer }{s}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%+v %#v %v", cfg, cfg, s)} {
		if strings.Contains(out, "MC4CAQAw") || strings.Contains(out, "0x") || !strings.Contains(out, "[redacted]") {
			t.Errorf("printed %q", out)
		}
	}
}

func TestGenerateRoundTrip(t *testing.T) {
	s, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := sign.ParseSigner(s.PrivatePEM())
	if err != nil {
		t.Fatal(err)
	}
	v, err := sign.ParseVerifier(s.PublicPEM())
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("m")
	if err := v.Verify(purpose, msg, s2.Sign(purpose, msg)); err != nil {
		t.Fatal(err)
	}
	if err := s.Verifier().Verify(purpose, msg, s2.Sign(purpose, msg)); err != nil {
		t.Fatal(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
