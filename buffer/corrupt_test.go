package buffer_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
)

// makeBuffer writes a real buffer with n readings and returns its last seq.
func makeBuffer(t *testing.T, path string, n int) uint64 {
	t.Helper()
	b, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rs := appendN(t, b, 0, n)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return rs[n-1].Seq
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestCorruptFileIsMovedAside(t *testing.T) {
	tests := []struct {
		name string
		// damage creates or damages the file at path and returns the lowest
		// seq the fresh buffer may hand out (0: any).
		damage func(t *testing.T, path string) uint64
	}{
		{"text file", func(t *testing.T, path string) uint64 {
			return 0 * writeFile(t, path, bytes.Repeat([]byte("device_id: pi-1\nsensors: []\n"), 200))
		}},
		{"random bytes", func(t *testing.T, path string) uint64 {
			return 0 * writeFile(t, path, randomBytes(64<<10))
		}},
		{"tiny file", func(t *testing.T, path string) uint64 {
			return 0 * writeFile(t, path, []byte("x"))
		}},
		{"testdata fixture", func(t *testing.T, path string) uint64 {
			b, err := os.ReadFile("testdata/not-bbolt.db")
			if err != nil {
				t.Fatal(err)
			}
			return 0 * writeFile(t, path, b)
		}},
		{"truncated", func(t *testing.T, path string) uint64 {
			last := makeBuffer(t, path, 5000)
			if err := os.Truncate(path, fileSizeT(t, path)/2); err != nil {
				t.Fatal(err)
			}
			return last + 1
		}},
		{"both meta checksums bad", func(t *testing.T, path string) uint64 {
			makeBuffer(t, path, 100)
			// bbolt's meta pages are pages 0 and 1 (4 KiB each here); the
			// checksum is the last 8 bytes of the meta struct at 16+64-8.
			flip(t, path, 16+56)
			flip(t, path, 4096+16+56)
			return 0 // the sequence lives behind the metas: not salvageable, time-based floor
		}},
		{"damaged data page", func(t *testing.T, path string) uint64 {
			last := makeBuffer(t, path, 3000)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Overwrite a page in the middle of the B+tree with garbage.
			if _, err := f.WriteAt(randomBytes(4096), (fileSizeT(t, path)/4096/2)*4096); err != nil {
				t.Fatal(err)
			}
			f.Close()
			return last + 1
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "buffer.db")
			minSeq := tt.damage(t, path)
			log, sink := newLogger()
			b, err := buffer.Open(path, buffer.Options{Logger: log})
			if err != nil {
				t.Fatalf("Open of a damaged file failed instead of starting fresh: %v", err)
			}
			defer b.Close()
			aside := corruptFiles(t, path)
			if len(aside) != 1 {
				t.Fatalf("moved-aside files: %v", aside)
			}
			if !strings.Contains(sink.String(), "level=ERROR") || !strings.Contains(sink.String(), aside[0]) {
				t.Fatalf("no error logged naming %s:\n%s", aside[0], sink)
			}
			st, err := b.Stats()
			if err != nil || st.Count != 0 {
				t.Fatalf("fresh buffer Stats = %+v, %v", st, err)
			}
			r := newReading(1)
			if err := b.Append(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			if r.Seq < minSeq {
				t.Fatalf("fresh buffer reused seq %d (old file reached %d)", r.Seq, minSeq-1)
			}
			if minSeq == 0 && r.Seq < uint64(time.Now().Add(-time.Hour).UnixMicro()) {
				t.Fatalf("unsalvageable sequence: fresh seq %d is not above the time floor", r.Seq)
			}
			rep, err := b.Verify(context.Background())
			if err != nil || !rep.OK() {
				t.Fatalf("Verify of the fresh buffer = %+v, %v", rep, err)
			}
			// The read-only CLI path reports damage and never moves files.
			ro, err := buffer.OpenReadOnly(aside[0], 100*time.Millisecond)
			if err == nil {
				rep, verr := ro.Verify(context.Background())
				ro.Close()
				if verr == nil && rep.OK() {
					t.Fatalf("the moved-aside file verifies clean: %+v", rep)
				}
			} else if !errors.Is(err, buffer.ErrCorrupt) {
				t.Fatalf("OpenReadOnly(corrupt) = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestOneBadMetaPageIsNotCorruption(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	last := makeBuffer(t, path, 100)
	flip(t, path, 16+56) // bbolt falls back to the other meta page
	b := openT(t, path, buffer.Options{})
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
		t.Fatalf("file moved aside: %v", aside)
	}
	if st, err := b.Stats(); err != nil || st.LastSeq < last-1 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
}

func TestEmptyFileIsInitialised(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	writeFile(t, path, nil)
	b := openT(t, path, buffer.Options{})
	appendN(t, b, 0, 1)
	if aside := corruptFiles(t, path); len(aside) != 0 {
		t.Fatalf("empty file moved aside: %v", aside)
	}
}

func TestUnwritableDirIsAnErrorNotCorruption(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	if _, err := buffer.Open(filepath.Join(dir, "buffer.db"), buffer.Options{}); err == nil || errors.Is(err, buffer.ErrCorrupt) {
		t.Fatalf("Open in a read-only dir = %v, want a permission error", err)
	}
}

func writeFile(t *testing.T, path string, b []byte) uint64 {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return 0
}

func fileSizeT(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// corruptFiles lists the moved-aside buffer files (not their logs).
func corruptFiles(t *testing.T, path string) []string {
	t.Helper()
	all, err := filepath.Glob(path + ".corrupt-*")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range all {
		if !strings.HasSuffix(f, ".wal") {
			out = append(out, f)
		}
	}
	return out
}
