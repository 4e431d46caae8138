package release_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgepipe/sensorpipe/agent/update/release"
)

func TestHashFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		sum           string // sha256sum(1) of content
	}{
		{"empty", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			size, sum, err := release.HashFile(p)
			if err != nil || size != int64(len(tc.content)) || sum != tc.sum {
				t.Errorf("HashFile = %d, %s, %v; want %d, %s", size, sum, err, len(tc.content), tc.sum)
			}
		})
	}
	if _, _, err := release.HashFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("HashFile(missing) = %v, want fs.ErrNotExist", err)
	}
}
