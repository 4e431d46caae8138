package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/sign/envelope"
)

// Command names the agent runs.
const (
	CmdRestart     = "restart"      // exit cleanly; systemd starts the agent again
	CmdResend      = "resend"       // send every unconfirmed reading now
	CmdSensors     = "sensors"      // read each sensor once, return the values
	CmdBufferStats = "buffer-stats" // the buffer's counts and the delivery state
)

// Commands lists the command names.
var Commands = []string{CmdRestart, CmdResend, CmdSensors, CmdBufferStats}

// MaxCommandLife bounds expires-issued: the agent remembers a command's id
// until it expires, so the bound keeps that memory small.
const MaxCommandLife = 24 * time.Hour

// clockSkew is how far in the future a command's issue time may be.
const clockSkew = 5 * time.Minute

// Command is the signed part of a command message.
type Command struct {
	ID      string    `json:"id"`
	Device  string    `json:"device"`
	Name    string    `json:"name"`
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
}

// Result answers a command on the device's result topic.
type Result struct {
	V      int       `json:"v"`
	ID     string    `json:"id"`
	Device string    `json:"device"`
	Name   string    `json:"name,omitempty"`
	OK     bool      `json:"ok"`
	Error  string    `json:"error,omitempty"`
	At     time.Time `json:"at"`
	// Result is the command's output (sensors: values by sensor;
	// buffer-stats: counts; resend: how many were made due).
	Result json.RawMessage `json:"result,omitempty"`
}

// SignCommand encodes and signs c: the payload to publish.
func SignCommand(c Command, s Signer) ([]byte, error) {
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return envelope.Seal(partCmd, raw, CommandPurpose, s)
}

// OpenCommand verifies a command message and decodes it. It does not check
// the device, the expiry or the id.
func OpenCommand(payload []byte, v Verifier) (Command, error) {
	var c Command
	raw, err := open(payload, v, partCmd, CommandPurpose)
	if err != nil {
		return c, err
	}
	if err := strictUnmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("%w: command: %w", ErrMalformed, err)
	}
	return c, nil
}

// Executor runs a verified command; the value is encoded as the result.
type Executor interface {
	Execute(ctx context.Context, name string) (any, error)
}

// CommanderOptions configures a Commander.
type CommanderOptions struct {
	DeviceID string
	Verifier Verifier
	StateDir string // where CommandsFile is kept
	// Synced tells whether the clock is set: expiry cannot be checked
	// before NTP sync, so commands are refused until then.
	Synced func() bool
	// Publish sends a result; nil results are not sent.
	Publish func(ctx context.Context, payload []byte) error
	Logger  *slog.Logger
}

// Commander receives commands, refuses forged, expired and replayed ones,
// runs the others and publishes their results.
type Commander struct {
	o    CommanderOptions
	log  *slog.Logger
	path string
	in   chan []byte
	seen map[string]time.Time // id -> expiry; persisted before a command runs
}

// NewCommander loads the ids already seen.
func NewCommander(o CommanderOptions) (*Commander, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Commander{o: o, log: o.Logger, path: filepath.Join(o.StateDir, CommandsFile), in: make(chan []byte, 16), seen: map[string]time.Time{}}
	if err := loadJSON(c.path, &c.seen); err != nil {
		// Refusing every command would be safe but leave the Pi
		// unmanageable; expiry still bounds a replay to the command's life.
		c.log.Warn("fleet command ids unreadable; only expiry guards against replays until they expire", "err", err)
		c.seen = map[string]time.Time{}
	}
	return c, nil
}

// Offer hands a message from the command topic to Run without blocking.
func (c *Commander) Offer(payload []byte) {
	select {
	case c.in <- bytes.Clone(payload):
	default:
		c.log.Warn("fleet command dropped: too many pending")
	}
}

// Run handles commands until ctx ends. It returns ErrRestart after the
// result of a restart command is published.
func (c *Commander) Run(ctx context.Context, x Executor) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case p := <-c.in:
			cmd, err := c.admit(p)
			if err != nil {
				c.log.Warn("fleet command refused", "id", cmd.ID, "name", cmd.Name, "err", err)
				c.answer(ctx, cmd, nil, err)
				continue
			}
			c.log.Info("fleet command", "id", cmd.ID, "name", cmd.Name)
			if cmd.Name == CmdRestart {
				c.answer(ctx, cmd, map[string]string{"restarting": "the agent exits; systemd starts it again"}, nil)
				return fmt.Errorf("%w: command %s", ErrRestart, cmd.ID)
			}
			v, err := x.Execute(ctx, cmd.Name)
			c.answer(ctx, cmd, v, err)
		}
	}
}

// admit checks a command and records its id. The id is persisted before
// the command runs: a crash may lose a command, never run one twice.
func (c *Commander) admit(p []byte) (Command, error) {
	cmd, err := OpenCommand(p, c.o.Verifier)
	if err != nil {
		// Echo the id so the sender can match the refusal, but nothing else.
		if u, uerr := parseUnverifiedCommand(p); uerr == nil {
			return Command{ID: u.ID}, err
		}
		return Command{}, err
	}
	if cmd.Device != c.o.DeviceID {
		return cmd, fmt.Errorf("%w: command for device %q", ErrTarget, cmd.Device)
	}
	if cmd.ID == "" || len(cmd.ID) > 128 {
		return cmd, fmt.Errorf("%w: id must be 1..128 bytes", ErrMalformed)
	}
	if c.o.Synced != nil && !c.o.Synced() {
		return cmd, fmt.Errorf("%w: the clock is not synced yet, so the expiry cannot be checked", ErrExpired)
	}
	now := time.Now()
	if !now.Before(cmd.Expires) || cmd.Issued.After(now.Add(clockSkew)) || cmd.Expires.Sub(cmd.Issued) > MaxCommandLife {
		return cmd, fmt.Errorf("%w: issued %s, expires %s, now %s (at most %v)", ErrExpired,
			cmd.Issued.UTC().Format(time.RFC3339), cmd.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), MaxCommandLife)
	}
	if _, ok := c.seen[cmd.ID]; ok {
		return cmd, fmt.Errorf("%w: %s", ErrReplayed, cmd.ID)
	}
	switch cmd.Name {
	case CmdRestart, CmdResend, CmdSensors, CmdBufferStats:
	default:
		return cmd, fmt.Errorf("%w: %q (one of %v)", ErrUnknownCommand, cmd.Name, Commands)
	}
	for id, exp := range c.seen {
		if !now.Before(exp) {
			delete(c.seen, id) // expired: refused by its expiry from now on
		}
	}
	c.seen[cmd.ID] = cmd.Expires
	if err := saveJSON(c.path, c.seen); err != nil {
		delete(c.seen, cmd.ID)
		return cmd, fmt.Errorf("record command id: %w", err)
	}
	return cmd, nil
}

func parseUnverifiedCommand(p []byte) (Command, error) {
	var cmd Command
	raw, err := envelope.Unverified(p, partCmd)
	if err != nil {
		return cmd, err
	}
	err = json.Unmarshal(raw, &cmd)
	return cmd, err
}

func (c *Commander) answer(ctx context.Context, cmd Command, v any, err error) {
	if c.o.Publish == nil || cmd.ID == "" {
		return
	}
	r := Result{V: WireVersion, ID: cmd.ID, Device: c.o.DeviceID, Name: cmd.Name, OK: err == nil, At: time.Now().UTC()}
	if err != nil {
		r.Error = err.Error()
	} else if v != nil {
		b, merr := json.Marshal(v)
		if merr != nil {
			r.OK, r.Error = false, merr.Error()
		} else {
			r.Result = b
		}
	}
	b, _ := json.Marshal(r)
	if perr := c.o.Publish(ctx, b); perr != nil {
		c.log.Warn("publish command result", "id", cmd.ID, "err", perr)
	}
}
