package remote_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgepipe/sensorpipe/agent/remote"
)

type executor struct{ ran []string }

func (x *executor) Execute(_ context.Context, name string) (any, error) {
	x.ran = append(x.ran, name)
	if name == remote.CmdResend {
		return nil, errors.New("not connected")
	}
	return map[string]int{"count": 42}, nil
}

type commanderHarness struct {
	t       *testing.T
	c       *remote.Commander
	x       *executor
	results chan remote.Result
	done    chan error
	cancel  context.CancelFunc
}

func newCommander(t *testing.T, k *key, dir string, synced bool) *commanderHarness {
	t.Helper()
	h := &commanderHarness{t: t, x: &executor{}, results: make(chan remote.Result, 16), done: make(chan error, 1)}
	c, err := remote.NewCommander(remote.CommanderOptions{DeviceID: "pi-1", Verifier: k.Verifier(), StateDir: dir,
		Synced: func() bool { return synced },
		Publish: func(_ context.Context, p []byte) error {
			var r remote.Result
			if err := json.Unmarshal(p, &r); err != nil {
				t.Errorf("result does not decode: %v", err)
			}
			h.results <- r
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	h.c = c
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- c.Run(ctx, h.x) }()
	t.Cleanup(func() { cancel(); <-h.done })
	return h
}

func (h *commanderHarness) send(p []byte) remote.Result {
	h.t.Helper()
	h.c.Offer(p)
	synctest.Wait()
	select {
	case r := <-h.results:
		return r
	default:
		h.t.Fatal("no result")
		return remote.Result{}
	}
}

func cmd(t *testing.T, s remote.Signer, id, device, name string, issued time.Time, life time.Duration) []byte {
	t.Helper()
	p, err := remote.SignCommand(remote.Command{ID: id, Device: device, Name: name, Issued: issued, Expires: issued.Add(life)}, s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCommands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		dir := t.TempDir()
		h := newCommander(t, k, dir, true)
		now := time.Now()
		r := h.send(cmd(t, k, "c1", "pi-1", remote.CmdBufferStats, now, time.Minute))
		if !r.OK || r.ID != "c1" || r.Name != remote.CmdBufferStats || string(r.Result) != `{"count":42}` {
			t.Fatalf("result %+v", r)
		}
		if r := h.send(cmd(t, k, "c2", "pi-1", remote.CmdResend, now, time.Minute)); r.OK || r.ID != "c2" || r.Error != "not connected" {
			t.Fatalf("failing command: %+v", r)
		}
		tests := []struct {
			name    string
			payload []byte
			want    error
		}{
			{"replayed", cmd(t, k, "c1", "pi-1", remote.CmdBufferStats, now, time.Minute), remote.ErrReplayed},
			{"expired", cmd(t, k, "c3", "pi-1", remote.CmdSensors, now.Add(-2*time.Minute), time.Minute), remote.ErrExpired},
			{"from the future", cmd(t, k, "c4", "pi-1", remote.CmdSensors, now.Add(time.Hour), time.Hour), remote.ErrExpired},
			{"too long a life", cmd(t, k, "c5", "pi-1", remote.CmdSensors, now, 48*time.Hour), remote.ErrExpired},
			{"other device", cmd(t, k, "c6", "pi-2", remote.CmdSensors, now, time.Minute), remote.ErrTarget},
			{"wrong key", cmd(t, newKey(t), "c7", "pi-1", remote.CmdSensors, now, time.Minute), remote.ErrSignature},
			{"config purpose", cmd(t, purposeSigner{k, remote.ConfigPurpose}, "c8", "pi-1", remote.CmdSensors, now, time.Minute), remote.ErrSignature},
			{"unknown name", cmd(t, k, "c9", "pi-1", "rm -rf", now, time.Minute), remote.ErrUnknownCommand},
		}
		for _, tt := range tests {
			r := h.send(tt.payload)
			if r.OK || !strings.Contains(r.Error, tt.want.Error()) {
				t.Errorf("%s: result %+v, want refused with %q", tt.name, r, tt.want)
			}
		}
		if len(h.x.ran) != 2 {
			t.Fatalf("ran %v, want only the two good commands", h.x.ran)
		}
	})
}

// TestCommandIDsSurviveRestart: a command replayed to a restarted agent is
// refused too.
func TestCommandIDsSurviveRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		dir := t.TempDir()
		p := cmd(t, k, "c1", "pi-1", remote.CmdSensors, time.Now(), time.Hour)
		h := newCommander(t, k, dir, true)
		if r := h.send(p); !r.OK {
			t.Fatalf("first: %+v", r)
		}
		h.cancel()
		<-h.done
		h.done <- nil // for the cleanup
		h2 := newCommander(t, k, dir, true)
		if r := h2.send(p); r.OK || !strings.Contains(r.Error, remote.ErrReplayed.Error()) {
			t.Fatalf("replay after restart: %+v", r)
		}
	})
}

func TestCommandRefusedBeforeClockSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		h := newCommander(t, k, t.TempDir(), false)
		if r := h.send(cmd(t, k, "c1", "pi-1", remote.CmdSensors, time.Now(), time.Minute)); r.OK || !strings.Contains(r.Error, "not synced") {
			t.Fatalf("result %+v", r)
		}
	})
}

func TestRestartCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKey(t)
		h := newCommander(t, k, t.TempDir(), true)
		h.c.Offer(cmd(t, k, "r1", "pi-1", remote.CmdRestart, time.Now(), time.Minute))
		err := <-h.done
		h.done <- nil
		if !errors.Is(err, remote.ErrRestart) {
			t.Fatalf("Run = %v, want ErrRestart", err)
		}
		if r := <-h.results; !r.OK || r.ID != "r1" {
			t.Fatalf("result %+v", r)
		}
	})
}
