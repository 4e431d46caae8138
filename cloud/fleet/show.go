package fleet

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Shown is `fleet config show --json`.
type Shown struct {
	Device string `json:"device"`
	Group  string `json:"group,omitempty"`
	// Levels holds the document in force at each level (absent: none).
	Levels map[remote.Level]remote.Doc `json:"levels"`
	// Merged is the layered config the device should apply.
	Merged map[string]any `json:"merged"`
	// Applied is the "config" object of the device's retained status
	// (absent when the status could not be read).
	Applied json.RawMessage `json:"applied,omitempty"`
}

func show(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet config show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	group := fs.String("group", "", "the device's group `NAME` (its fleet.group)")
	asJSON := fs.Bool("json", false, "print JSON")
	wait := fs.Duration("timeout", 15*time.Second, "how long to wait for the broker")
	pos, err := parse(fs, args, 1, "a DEVICE")
	if err != nil {
		return err
	}
	dev := pos[0]
	if err := reading.CheckName(dev); err != nil {
		return cmdline.Usagef("DEVICE: %v", err)
	}
	if *group != "" {
		if err := reading.CheckName(*group); err != nil {
			return cmdline.Usagef("--group: %v", err)
		}
	}
	e, err := loadEnv(getenv)
	if err != nil {
		return err
	}
	c, err := dial(ctx, e, *wait)
	if err != nil {
		return err
	}
	defer c.close()
	topics := map[string]remote.Level{
		remote.ConfigTopic(e.Prefix, remote.LevelFleet, ""):   remote.LevelFleet,
		remote.ConfigTopic(e.Prefix, remote.LevelDevice, dev): remote.LevelDevice,
	}
	if *group != "" {
		topics[remote.ConfigTopic(e.Prefix, remote.LevelGroup, *group)] = remote.LevelGroup
	}
	var list []string
	for t := range topics {
		list = append(list, t)
	}
	got, err := c.retained(ctx, list, time.Second)
	if err != nil {
		return err
	}
	out := Shown{Device: dev, Group: *group, Levels: map[remote.Level]remote.Doc{}}
	var layers []map[string]any
	for _, l := range remote.Levels {
		for t, tl := range topics {
			if tl != l {
				continue
			}
			if p, ok := got[t]; ok {
				d, err := remote.ParseUnverified(p)
				if err != nil {
					return fmt.Errorf("%s: %w", t, err)
				}
				out.Levels[l] = d
				layers = append(layers, d.Config)
			}
		}
	}
	out.Merged = remote.Merge(layers...)
	// The applied config is in the device's heartbeat; reading status may
	// be refused to the operator login (then it is left out).
	st, err := c.retained(ctx, []string{e.Prefix + "/" + dev + "/status"}, time.Second)
	if err == nil {
		var s struct {
			Config json.RawMessage `json:"config"`
		}
		if p, ok := st[e.Prefix+"/"+dev+"/status"]; ok && json.Unmarshal(p, &s) == nil {
			out.Applied = s.Config
		}
	}
	if *asJSON {
		return cmdline.PrintJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LEVEL\tVERSION\tISSUED\tCONFIG")
	for _, l := range remote.Levels {
		name := string(l)
		if l == remote.LevelGroup {
			if *group == "" {
				fmt.Fprintf(tw, "group\t-\t-\t(give --group NAME)\n")
				continue
			}
			name += " " + *group
		}
		d, ok := out.Levels[l]
		if !ok {
			fmt.Fprintf(tw, "%s\t-\t-\t(none)\n", name)
			continue
		}
		b, _ := json.Marshal(d.Config)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", name, d.Version, d.Issued.UTC().Format(time.RFC3339), b)
	}
	_ = tw.Flush()
	b, _ := json.Marshal(out.Merged)
	fmt.Fprintf(stdout, "\ndesired (layered): %s\n", b)
	if out.Applied != nil {
		fmt.Fprintf(stdout, "applied (from %s's status): %s\n", dev, out.Applied)
	} else {
		fmt.Fprintf(stdout, "applied: unknown (no retained status with a config readable by this login)\n")
	}
	return nil
}
