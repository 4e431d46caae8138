package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/atomicfile"
	"github.com/edgepipe/sensorpipe/buffer/tlsconf"
)

// fetcher downloads release binaries over HTTPS.
type fetcher struct {
	client *http.Client
	// free is the space left to us on path's filesystem (statfs; tests
	// inject a full disk).
	free func(path string) (int64, error)
}

// newFetcher downloads over TLS 1.2+, trusting caFile only when set, else
// the system roots (buffer/tlsconf).
func newFetcher(caFile string) (*fetcher, error) {
	tc, err := tlsconf.Client(caFile)
	if err != nil {
		return nil, fmt.Errorf("update.ca_file: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &fetcher{client: &http.Client{Transport: tr}, free: statfsFree}, nil
}

// statfsFree is the space available to unprivileged users on path's
// filesystem, as df shows it.
func statfsFree(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// partPath is where version's download accumulates under dir.
func partPath(dir, version string) string {
	return filepath.Join(dir, downloadDir, version+".part")
}

// fetch downloads rawURL into part, resuming a part left by an earlier
// attempt with a Range request, and never writes more than size bytes.
// It starts only with at least twice the bytes still to fetch free on the
// filesystem. A cut connection leaves the part for the next attempt
// (ErrTruncated); a server that sends more than size is refused
// (ErrTooLarge) and the part removed.
func (f *fetcher) fetch(ctx context.Context, rawURL string, size int64, part string) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%w: %q", ErrNotHTTPS, rawURL)
	}
	if err := os.MkdirAll(filepath.Dir(part), 0o750); err != nil {
		return fmt.Errorf("download dir: %w", err)
	}
	have := int64(0)
	if fi, err := os.Stat(part); err == nil {
		have = fi.Size()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("download: %w", err)
	}
	if have > size { // a part from a manifest of another size
		if err := os.Remove(part); err != nil {
			return fmt.Errorf("download: %w", err)
		}
		have = 0
	}
	if have == size {
		return nil
	}
	free, err := f.free(filepath.Dir(part))
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if need := 2 * (size - have); free < need {
		return fmt.Errorf("%w: %d bytes free, %d needed", ErrNoSpace, free, need)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	flags := os.O_WRONLY | os.O_CREATE
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != have {
			return fmt.Errorf("%w: Content-Range %q for a resume at %d", ErrHTTP, resp.Header.Get("Content-Range"), have)
		}
		flags |= os.O_APPEND
	case resp.StatusCode == http.StatusOK: // no resume: from the start
		flags |= os.O_TRUNC
		have = 0
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		// The part reaches the end of the server's file: the file is
		// shorter than the manifest says. Resuming cannot help.
		return fmt.Errorf("%w: %w: the server's file ends before %d bytes (Content-Range %q)",
			ErrTruncated, errServerShort, size, resp.Header.Get("Content-Range"))
	default:
		return fmt.Errorf("%w: %s", ErrHTTP, resp.Status)
	}
	if resp.ContentLength > size-have {
		return fmt.Errorf("%w: the server announces %d bytes, %d expected", ErrTooLarge, have+resp.ContentLength, size)
	}
	out, err := os.OpenFile(part, flags, 0o640)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	// One byte more than expected tells a file that is too large.
	n, cerr := io.Copy(out, io.LimitReader(resp.Body, size-have+1))
	if err := errors.Join(out.Sync(), out.Close()); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	switch got := have + n; {
	case got > size:
		_ = os.Remove(part)
		return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, size)
	case got < size:
		if cerr == nil {
			cerr = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: %d of %d bytes: %w", ErrTruncated, got, size, cerr)
	}
	return nil
}

// errServerShort marks a truncation no resume can fix.
var errServerShort = errors.New("short file on the server")

// rangeStart is the first byte of a "bytes first-last/total" header.
func rangeStart(h string) (int64, bool) {
	s, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(s, "-")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(first, 10, 64)
	return v, err == nil
}

// verifyFile checks path's size and sha256 (hex) against a manifest's.
func verifyFile(path string, size int64, sum string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	return verifyOpen(f, path, size, sum)
}

// verifyOpen is verifyFile on an open file, read from where it is (at
// most one byte past size, so an oversized file is not read to its end).
func verifyOpen(f io.Reader, path string, size int64, sum string) error {
	n, got, err := release.Hash(io.LimitReader(f, size+1))
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	switch {
	case n > size:
		return fmt.Errorf("%w: %s is larger than %d bytes", ErrTooLarge, path, size)
	case n < size:
		return fmt.Errorf("%w: %s has %d of %d bytes", ErrTruncated, path, n, size)
	}
	if !strings.EqualFold(got, sum) {
		return fmt.Errorf("%w: %s is %s, the manifest says %s", ErrHash, path, got, sum)
	}
	return nil
}

// stage moves a verified download into versions/<version>/ (a rename on
// the same filesystem), executable, with its signed manifest next to it,
// everything fsynced.
func stage(dir, version, part string, signedManifest []byte) error {
	vdir := filepath.Dir(BinaryPath(dir, version))
	if err := os.MkdirAll(vdir, 0o750); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if err := atomicfile.WriteFile(ManifestPath(dir, version), signedManifest, 0o640); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if err := os.Chmod(part, 0o750); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if err := os.Rename(part, BinaryPath(dir, version)); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if err := atomicfile.SyncDir(vdir); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Join(dir, versionsDir)); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(part))
}

// prune removes the staged versions not in keep, and downloads left over.
func prune(dir string, keep ...string) error {
	ents, err := os.ReadDir(filepath.Join(dir, versionsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("prune: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if !contains(keep, e.Name()) {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, versionsDir, e.Name())))
		}
	}
	parts, _ := filepath.Glob(filepath.Join(dir, downloadDir, "*.part"))
	for _, p := range parts {
		if !contains(keep, strings.TrimSuffix(filepath.Base(p), ".part")) {
			errs = append(errs, os.Remove(p))
		}
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s && s != "" {
			return true
		}
	}
	return false
}
