package bufcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// remote reads the buffer through the running agent's status endpoint.
type remote struct {
	base   string // http://host:port/buffer
	client *http.Client
}

func newRemote(status string) *remote {
	base := status
	if !strings.Contains(base, "://") {
		base = "http://" + dialAddr(status)
	}
	return &remote{
		base: strings.TrimRight(base, "/") + "/buffer",
		client: &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			ResponseHeaderTimeout: 10 * time.Second,
		}},
	}
}

func (r *remote) get(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	u := r.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return resp, nil
}

func (r *remote) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := r.stats(ctx)
	return err
}

func (r *remote) stats(ctx context.Context) (Stats, error) {
	var st Stats
	resp, err := r.get(ctx, "/stats", nil)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("decode %s/stats: %w", r.base, err)
	}
	return st, nil
}

// lines streams the JSON-lines body of list or export to fn.
func (r *remote) lines(ctx context.Context, path string, q url.Values, fn func(line []byte) error) error {
	resp, err := r.get(ctx, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return eachLine(resp.Body, fn)
}
