package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// The demo's fleet view: once the simulated Pi reports, the demo prints
// the fleet as `cloud-forwarder fleet status` (the real binary) shows it:
// from the sink's database when the demo has one (the heartbeat went
// agent -> MQTT -> forwarder -> Kafka status topic -> sink), else from the
// broker's retained heartbeats.

// fleetView waits (up to wait) until `fleet status` lists device as
// reporting, then prints the human view.
func fleetView(ctx context.Context, bin string, env []string, device string, wait time.Duration, out io.Writer) error {
	deadline := time.Now().Add(wait)
	for {
		js, err := fleetStatus(ctx, bin, env, "--json")
		if err == nil {
			if err = reporting(js, device); err == nil {
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not reporting in `cloud-forwarder fleet status` after %v: %w", device, wait, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	view, err := fleetStatus(ctx, bin, env)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "demo: the fleet, as `cloud-forwarder fleet status` shows it:\n%s", view)
	return nil
}

func fleetStatus(ctx context.Context, bin string, env []string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"fleet", "status"}, args...)...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cloud-forwarder fleet status: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return b, nil
}

// reporting checks that the JSON of `fleet status --json` lists device as reporting.
func reporting(js []byte, device string) error {
	var devs []struct {
		ID        string `json:"device"`
		Reporting bool   `json:"reporting"`
	}
	if err := json.Unmarshal(js, &devs); err != nil {
		return err
	}
	for _, d := range devs {
		if d.ID == device && d.Reporting {
			return nil
		}
	}
	return fmt.Errorf("%d devices listed, %s not reporting among them", len(devs), device)
}

// lockedWriter serialises the demo's writers (the readings' consumer and
// the fleet view).
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
