package bufhttp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Client reads the buffer through the running agent's status endpoint.
type Client struct {
	base   string // http://host:port/buffer
	client *http.Client
}

// NewClient returns a client of the endpoint at status, a listen address
// (":9101", "127.0.0.1:9101") or a URL.
func NewClient(status string) *Client {
	return &Client{
		base: StatusURL(status) + "/buffer",
		client: &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			ResponseHeaderTimeout: 10 * time.Second,
		}},
	}
}

func (r *Client) get(ctx context.Context, path string, q url.Values) (*http.Response, error) {
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

// Base is the endpoint's URL, for messages.
func (r *Client) Base() string { return r.base }

// Ping checks that the endpoint answers, within 5 seconds.
func (r *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := r.Stats(ctx)
	return err
}

// Stats is GET /buffer/stats.
func (r *Client) Stats(ctx context.Context) (Stats, error) {
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

// Lines streams the JSON-lines body of "/list" or "/export" to fn.
func (r *Client) Lines(ctx context.Context, path string, q url.Values, fn func(line []byte) error) error {
	resp, err := r.get(ctx, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return EachLine(resp.Body, fn)
}

// EachLine calls fn with each line of r, as long as a reading can be.
func EachLine(r io.Reader, fn func([]byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), reading.MaxPayload+1024)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// StatusURL is the base URL ("http://127.0.0.1:9101") of the agent's status
// endpoint at status, a listen address (":9101", "0.0.0.0:9101") or a URL.
func StatusURL(status string) string {
	base := status
	if !strings.Contains(base, "://") {
		base = "http://" + dialAddr(status)
	}
	return strings.TrimRight(base, "/")
}

// dialAddr turns a listen address (":9101", "0.0.0.0:9101") into one to dial.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
