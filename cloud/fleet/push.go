package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/remote"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

func push(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet config push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	all := fs.Bool("fleet", false, "the fleet level: every device")
	group := fs.String("group", "", "the level of group `NAME` (the devices whose fleet.group is NAME)")
	device := fs.String("device", "", "the level of device `ID`")
	version := fs.Uint64("version", 0, "the document's version (default: the one in force at that level + 1)")
	dry := fs.Bool("dry-run", false, "validate and print the document; sign and publish nothing")
	keyFile := fs.String("key", "", "the operator's private key `FILE` (default $FLEET_KEY_FILE)")
	wait := fs.Duration("timeout", 15*time.Second, "how long to wait for the broker")
	pos, err := parse(fs, args, 1, "a FILE")
	if err != nil {
		return err
	}
	level, target, err := levelOf(*all, *group, *device)
	if err != nil {
		return err
	}
	cfg, err := readDoc(pos[0])
	if err != nil {
		return err
	}
	if err := Validate(cfg); err != nil {
		return cmdline.Usagef("%s: %v", pos[0], err)
	}
	if *dry {
		b, _ := json.MarshalIndent(map[string]any{"level": level, "target": target, "config": cfg}, "", "  ")
		fmt.Fprintf(stdout, "%s\nvalid; not published (--dry-run)\n", b)
		return nil
	}
	e, signer, c, err := signingSession(ctx, getenv, *keyFile, *wait)
	if err != nil {
		return err
	}
	defer c.close()
	topic := remote.ConfigTopic(e.Prefix, level, target)
	if *version == 0 {
		cur, err := c.retained(ctx, []string{topic}, time.Second)
		if err != nil {
			return err
		}
		*version = 1
		if p, ok := cur[topic]; ok {
			d, err := remote.ParseUnverified(p)
			if err != nil {
				return fmt.Errorf("the document in force on %s does not decode (give --version): %w", topic, err)
			}
			*version = d.Version + 1
		}
	}
	payload, err := remote.SignConfig(remote.Doc{Level: level, Target: target, Version: *version, Issued: time.Now().UTC(), Config: cfg}, signer)
	if err != nil {
		return err
	}
	if err := c.publish(ctx, topic, true, payload); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "published %s config version %d on %s (retained)\n", level, *version, topic)
	return nil
}

func levelOf(all bool, group, device string) (remote.Level, string, error) {
	n := 0
	for _, set := range []bool{all, group != "", device != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return "", "", cmdline.Usagef("fleet config push: give exactly one of --fleet, --group NAME, --device ID")
	}
	switch {
	case group != "":
		if err := reading.CheckName(group); err != nil {
			return "", "", cmdline.Usagef("--group: %v", err)
		}
		return remote.LevelGroup, group, nil
	case device != "":
		if err := reading.CheckName(device); err != nil {
			return "", "", cmdline.Usagef("--device: %v", err)
		}
		return remote.LevelDevice, device, nil
	}
	return remote.LevelFleet, "", nil
}

// readDoc reads a YAML (or JSON) mapping of config keys.
func readDoc(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, cmdline.Usagef("cannot read %s: %v", path, errors.Unwrap(err))
	}
	var m map[string]any
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&m); err != nil && !errors.Is(err, io.EOF) {
		return nil, cmdline.Usagef("%s: %v", path, err)
	}
	if m == nil {
		m = map[string]any{}
	}
	// Through JSON, as the agent will see it (YAML's own types, such as
	// map[any]any or time values, do not survive the trip).
	j, err := json.Marshal(m)
	if err != nil {
		return nil, cmdline.Usagef("%s: %v", path, err)
	}
	m = nil
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, cmdline.Usagef("%s: %v", path, err)
	}
	return m, nil
}

// Validate checks a document's config the way a device will, as far as
// it can without the device's own file: only remotely changeable keys, and
// the result valid over a sample device whose sensors carry the names the
// document mentions.
func Validate(cfg map[string]any) error {
	if err := remote.CheckKeys(cfg); err != nil {
		return err
	}
	sample := "device_id: sample\nmqtt: {url: 'tcp://127.0.0.1:1883'}\nsensors:\n  - {name: sample, driver: sim}\n"
	if m, ok := cfg["sensor_intervals"].(map[string]any); ok {
		for name := range m {
			if reading.CheckName(name) != nil {
				return fmt.Errorf("%w: sensor_intervals: %q is not a sensor name", remote.ErrInvalid, name)
			}
			sample += fmt.Sprintf("  - {name: %q, driver: sim}\n", name)
		}
	}
	local, err := config.Parse([]byte(sample), func(string) string { return "" })
	if err != nil {
		return err
	}
	_, err = remote.Effective(local, cfg)
	return err
}
