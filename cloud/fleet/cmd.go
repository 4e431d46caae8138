package fleet

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// ErrFailed is returned when the device ran the command and it failed,
// or refused it.
var ErrFailed = fmt.Errorf("command failed")

func command(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet cmd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ttl := fs.Duration("ttl", 5*time.Minute, "the command expires this long after it is sent")
	wait := fs.Duration("timeout", 30*time.Second, "how long to wait for the result")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	keyFile := fs.String("key", "", "the operator's private key `FILE` (default $FLEET_KEY_FILE)")
	pos, err := parse(fs, args, 2, "DEVICE NAME")
	if err != nil {
		return err
	}
	dev, name := pos[0], pos[1]
	if err := reading.CheckName(dev); err != nil {
		return cmdline.Usagef("DEVICE: %v", err)
	}
	if !slices.Contains(remote.Commands, name) {
		return cmdline.Usagef("NAME: %q is not one of %v", name, remote.Commands)
	}
	if *ttl <= 0 || *ttl > remote.MaxCommandLife {
		return cmdline.Usagef("--ttl: %v is not between 0 and %v", *ttl, remote.MaxCommandLife)
	}
	e, signer, c, err := signingSession(ctx, getenv, *keyFile, *wait)
	if err != nil {
		return err
	}
	defer c.close()

	id := randomHex(12)
	results := make(chan remote.Result, 4)
	if err := c.wait(ctx, c.c.Subscribe(remote.ResultTopic(e.Prefix, dev), 1, func(_ mqtt.Client, m mqtt.Message) {
		var r remote.Result
		if json.Unmarshal(m.Payload(), &r) == nil && r.ID == id {
			select {
			case results <- r:
			default:
			}
		}
	}), "subscribe to the results"); err != nil {
		return err
	}
	now := time.Now().UTC()
	payload, err := remote.SignCommand(remote.Command{ID: id, Device: dev, Name: name, Issued: now, Expires: now.Add(*ttl)}, signer)
	if err != nil {
		return err
	}
	if err := c.publish(ctx, remote.CommandTopic(e.Prefix, dev), false, payload); err != nil {
		return err
	}
	t := time.NewTimer(*wait)
	defer t.Stop()
	var r remote.Result
	select {
	case r = <-results:
	case <-t.C:
		return fmt.Errorf("no result from %s for command %s (%s) in %v: is it online? (the command expires at %s)",
			dev, id, name, *wait, now.Add(*ttl).Format(time.RFC3339))
	case <-ctx.Done():
		return ctx.Err()
	}
	if *asJSON {
		if err := cmdline.PrintJSON(stdout, r); err != nil {
			return err
		}
	} else {
		printResult(stdout, r)
	}
	if !r.OK {
		return fmt.Errorf("%w on %s: %s", ErrFailed, dev, r.Error)
	}
	return nil
}

func printResult(w io.Writer, r remote.Result) {
	state := "ok"
	if !r.OK {
		state = "FAILED: " + r.Error
	}
	fmt.Fprintf(w, "%s %s (id %s) at %s: %s\n", r.Device, r.Name, r.ID, r.At.Format(time.RFC3339), state)
	if len(r.Result) > 0 {
		var v any
		if json.Unmarshal(r.Result, &v) == nil {
			b, _ := json.MarshalIndent(v, "", "  ")
			fmt.Fprintf(w, "%s\n", b)
		}
	}
}
