package pki

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// ConfirmKey is a throwaway confirmation key pair (buffer/sign), written
// in the formats openssl writes, for forwarders and agents under test.
type ConfirmKey struct {
	Signer  *sign.Signer   // the private key, to sign in-process
	Keys    *sign.Verifier // the public key, to verify in-process
	KeyFile string         // PEM PKCS#8 private key: FORWARDER_CONFIRM_KEY_FILE
	PubFile string         // PEM public key: mqtt.confirm_keys_file
}

// NewConfirmKey writes a new key pair into a temporary directory of tb.
func NewConfirmKey(tb testing.TB) *ConfirmKey {
	tb.Helper()
	k, err := WriteConfirmKey(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// WriteConfirmKey makes a key pair and writes it into dir as
// confirm.key (mode 0600) and confirm-keys.pem.
func WriteConfirmKey(dir string) (*ConfirmKey, error) {
	s, err := sign.Generate()
	if err != nil {
		return nil, err
	}
	k := &ConfirmKey{Signer: s, Keys: s.Verifier(),
		KeyFile: filepath.Join(dir, "confirm.key"), PubFile: filepath.Join(dir, "confirm-keys.pem")}
	if err := os.WriteFile(k.KeyFile, s.PrivatePEM(), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.PubFile, s.PublicPEM(), 0o644); err != nil {
		return nil, err
	}
	return k, nil
}

// Keyring writes the public keys of keys into one file, as an agent's
// mqtt.confirm_keys_file holds them while a key rotates, and loads it.
func Keyring(tb testing.TB, keys ...*ConfirmKey) (file string, v *sign.Verifier) {
	tb.Helper()
	var pem []byte
	for _, k := range keys {
		pem = append(pem, k.Signer.PublicPEM()...)
	}
	file = filepath.Join(tb.TempDir(), "confirm-keys.pem")
	if err := os.WriteFile(file, pem, 0o644); err != nil {
		tb.Fatal(err)
	}
	v, err := sign.LoadVerifier(file)
	if err != nil {
		tb.Fatal(err)
	}
	return file, v
}
