package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// binServer serves body at /bin over TLS with Range support; cutAt > 0
// makes the first response end after that many bytes.
type binServer struct {
	*httptest.Server
	ranges atomic.Int32 // requests that carried a Range header
}

func newBinServer(t *testing.T, body []byte, cutAt int) *binServer {
	t.Helper()
	s := &binServer{}
	var cut atomic.Bool
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			s.ranges.Add(1)
		}
		if cutAt > 0 && !cut.Swap(true) {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body[:cutAt])
			panic(http.ErrAbortHandler) // the connection drops mid-body
		}
		http.ServeContent(w, r, "bin", time.Time{}, bytes.NewReader(body))
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-CA test's handshake error
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *binServer) fetcher(free int64) *fetcher {
	return &fetcher{client: s.Client(), free: func(string) (int64, error) { return free, nil }}
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func body(n int) []byte { return bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n] }

func TestFetch(t *testing.T) {
	b := body(100_000)
	for _, tc := range []struct {
		name   string
		serve  []byte // what the server sends
		size   int64  // the manifest's size
		free   int64
		url    func(s *binServer) string
		want   error
		noPart bool // the part is removed
	}{
		{name: "ok", serve: b, size: int64(len(b)), free: 1 << 30},
		{name: "oversize", serve: append(b, 'x'), size: int64(len(b)), free: 1 << 30, want: ErrTooLarge, noPart: true},
		{name: "truncated", serve: b[:5000], size: int64(len(b)), free: 1 << 30, want: ErrTruncated},
		{name: "disk too full", serve: b, size: int64(len(b)), free: 2*int64(len(b)) - 1, want: ErrNoSpace, noPart: true},
		{name: "not https", serve: b, size: int64(len(b)), free: 1 << 30, want: ErrNotHTTPS, noPart: true,
			url: func(s *binServer) string { return strings.Replace(s.URL, "https:", "http:", 1) + "/bin" }},
		{name: "not found", serve: b, size: int64(len(b)), free: 1 << 30, want: ErrHTTP, noPart: true,
			url: func(s *binServer) string { return s.URL + "/other" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newBinServer(t, tc.serve, 0)
			if tc.name == "not found" {
				s.Config.Handler = http.NotFoundHandler()
			}
			u := s.URL + "/bin"
			if tc.url != nil {
				u = tc.url(s)
			}
			part := partPath(t.TempDir(), "1.2.3")
			err := s.fetcher(tc.free).fetch(context.Background(), u, tc.size, part)
			if !errors.Is(err, tc.want) {
				t.Fatalf("fetch: %v, want %v", err, tc.want)
			}
			_, serr := os.Stat(part)
			if tc.noPart && serr == nil {
				t.Errorf("part left behind")
			}
			if tc.want == nil {
				if err := verifyFile(part, tc.size, sum(b)); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestFetchResumesAfterCut(t *testing.T) {
	b := body(200_000)
	s := newBinServer(t, b, 70_000)
	part := partPath(t.TempDir(), "1.2.3")
	f := s.fetcher(1 << 30)
	err := f.fetch(context.Background(), s.URL+"/bin", int64(len(b)), part)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("first fetch: %v, want ErrTruncated", err)
	}
	fi, err := os.Stat(part)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("no part kept after the cut: %v", err)
	}
	if err := f.fetch(context.Background(), s.URL+"/bin", int64(len(b)), part); err != nil {
		t.Fatal(err)
	}
	if s.ranges.Load() != 1 {
		t.Errorf("%d Range requests, want 1 (the resume)", s.ranges.Load())
	}
	if err := verifyFile(part, int64(len(b)), sum(b)); err != nil {
		t.Fatal(err)
	}
	// A complete part is not fetched again.
	s.Close()
	if err := f.fetch(context.Background(), s.URL+"/bin", int64(len(b)), part); err != nil {
		t.Fatalf("complete part fetched again: %v", err)
	}
}

func TestFetchRestartsWhenServerIgnoresRange(t *testing.T) {
	b := body(50_000)
	s := newBinServer(t, b, 0)
	s.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(b) }) // 200, never 206
	part := partPath(t.TempDir(), "1.2.3")
	if err := os.MkdirAll(filepath.Dir(part), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(part, []byte("garbage from an earlier attempt"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := s.fetcher(1<<30).fetch(context.Background(), s.URL+"/bin", int64(len(b)), part); err != nil {
		t.Fatal(err)
	}
	if err := verifyFile(part, int64(len(b)), sum(b)); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyFile(t *testing.T) {
	b := body(1000)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int64
		sum  string
		want error
	}{
		{"ok", 1000, sum(b), nil},
		{"ok upper-case hex", 1000, strings.ToUpper(sum(b)), nil},
		{"wrong hash", 1000, sum([]byte("other")), ErrHash},
		{"larger than the manifest", 999, sum(b[:999]), ErrTooLarge},
		{"shorter than the manifest", 1001, sum(b), ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := verifyFile(path, tc.size, tc.sum); !errors.Is(err, tc.want) {
				t.Fatalf("verify: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStageAndPrune(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0"} {
		part := partPath(dir, v)
		if err := os.MkdirAll(filepath.Dir(part), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(part, []byte("binary "+v), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := stage(dir, v, part, []byte(`{"v":1}`)); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(BinaryPath(dir, v))
		if err != nil || fi.Mode().Perm()&0o100 == 0 {
			t.Fatalf("staged %s: %v %v", v, fi, err)
		}
		if _, err := os.Stat(part); err == nil {
			t.Fatalf("part of %s left behind", v)
		}
	}
	if err := os.WriteFile(partPath(dir, "0.9.0"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prune(dir, "1.2.0", "1.1.0", ""); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, versionsDir))
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != "1.1.0,1.2.0" {
		t.Errorf("versions kept: %v", got)
	}
	if _, err := os.Stat(partPath(dir, "0.9.0")); err == nil {
		t.Errorf("stale part kept")
	}
}

func TestNewFetcherTrustsOnlyItsCA(t *testing.T) {
	s := newBinServer(t, body(10), 0)
	f, err := newFetcher("") // system roots: the test server's certificate is not among them
	if err != nil {
		t.Fatal(err)
	}
	err = f.fetch(context.Background(), s.URL+"/bin", 10, partPath(t.TempDir(), "1.0.0"))
	if err == nil || errors.Is(err, ErrTruncated) {
		t.Fatalf("fetch from an untrusted server: %v", err)
	}
	if _, err := newFetcher(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Fatal("missing CA file accepted")
	}
}
