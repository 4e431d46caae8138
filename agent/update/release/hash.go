package release

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// Hash reads r to its end and returns how many bytes it held and their
// sha256 as a manifest writes it (lowercase hex). The operator's tool
// hashes a binary with it to sign a manifest, the agent to check one.
func Hash(r io.Reader) (size int64, sum string, err error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return n, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// HashFile is Hash of the file at path. An error opening it wraps the
// os error (errors.Is(err, fs.ErrNotExist) for a missing file).
func HashFile(path string) (size int64, sum string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	size, sum, err = Hash(f)
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", path, err)
	}
	return size, sum, nil
}
