package fleet

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/cloud/config"
)

// Device is one line of `fleet status`: a device's retained heartbeat.
type Device struct {
	ID string `json:"device"`
	// Reporting is false when the device is offline (its will, or a clean
	// stop) or its last heartbeat is older than --stale (from the
	// database: 3 of its status intervals).
	Reporting bool                `json:"reporting"`
	Age       float64             `json:"age_s"` // since the last heartbeat, by its ts
	Heartbeat heartbeat.Heartbeat `json:"heartbeat"`
}

// status is `fleet status`: the fleet from the sink's database when
// DATABASE_URL is set (every device that ever sent a heartbeat, with the
// Fleet dashboard's not-reporting rule), else as the brokers' retained
// heartbeats show it, read with the monitoring login
// (FLEET_STATUS_USERNAME).
func status(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	src := sourceFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	devs, err := src.devices(ctx, getenv, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		return cmdline.PrintJSON(stdout, devs)
	}
	printStatus(stdout, devs)
	return nil
}

// source is where `fleet status` and `fleet update status` read the
// devices' heartbeats from: the sink's database when DATABASE_URL is set,
// unless --broker, else the broker's retained heartbeats.
type source struct {
	stale, settle, wait *time.Duration
	viaBroker           *bool
}

// sourceFlags defines the flags of a source on fs.
func sourceFlags(fs *flag.FlagSet) *source {
	return &source{
		stale:     fs.Duration("stale", 3*time.Minute, "a heartbeat older than this is not reporting (broker only; the database counts 3 of each device's status_interval)"),
		settle:    fs.Duration("wait", 2*time.Second, "how long to collect the retained heartbeats (broker only)"),
		wait:      fs.Duration("timeout", 15*time.Second, "how long to wait for the broker"),
		viaBroker: fs.Bool("broker", false, "read the broker's retained heartbeats even when DATABASE_URL is set"),
	}
}

// devices reads the fleet from the source.
func (s *source) devices(ctx context.Context, getenv func(string) string, stderr io.Writer) ([]Device, error) {
	if usesDatabase(getenv) && !*s.viaBroker {
		return fromDatabase(ctx, getenv, *s.wait, stderr)
	}
	return fromBroker(ctx, getenv, *s.stale, *s.settle, *s.wait, stderr)
}

// fromBroker is the fleet as the broker's retained heartbeats show it.
func fromBroker(ctx context.Context, getenv func(string) string, stale, settle, wait time.Duration, stderr io.Writer) ([]Device, error) {
	e, err := loadEnv(getenv)
	if err != nil {
		return nil, err
	}
	if u := getenv("FLEET_STATUS_USERNAME"); u != "" {
		e.Username = u
		if e.Password, err = config.SecretFromEnv(getenv, "FLEET_STATUS_PASSWORD"); err != nil {
			return nil, err
		}
	}
	c, err := dial(ctx, e, wait)
	if err != nil {
		return nil, err
	}
	defer c.close()
	got := make(chan mqtt.Message, 4096)
	filter := e.Prefix + "/+/status"
	if err := c.wait(ctx, c.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- m:
		default:
		}
	}), "subscribe to "+filter+" (set FLEET_STATUS_USERNAME to the monitoring login)"); err != nil {
		return nil, err
	}
	seen := map[string][]byte{}
	t := time.NewTimer(settle)
	defer t.Stop()
collect:
	for {
		select {
		case m := <-got:
			dev := strings.TrimSuffix(strings.TrimPrefix(m.Topic(), e.Prefix+"/"), "/status")
			seen[dev] = m.Payload()
		case <-t.C:
			break collect
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	now := time.Now()
	devs := make([]Device, 0, len(seen))
	for id, p := range seen {
		hb, err := heartbeat.Decode(p)
		if err != nil {
			fmt.Fprintf(stderr, "%s: status does not decode: %v\n", id, err)
			continue
		}
		d := Device{ID: id, Heartbeat: hb}
		if hb.TS > 0 {
			d.Age = now.Sub(time.Unix(hb.TS, 0)).Seconds()
		}
		d.Reporting = hb.State == heartbeat.Online && d.Age <= stale.Seconds()
		devs = append(devs, d)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].ID < devs[j].ID })
	return devs, nil
}

func printStatus(w io.Writer, devs []Device) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tREPORTING\tSTATE\tLAST SEEN\tAGENT\tCONFIG\tBUFFERED\tUNCONFIRMED\tFAILING SENSORS")
	reporting := 0
	for _, d := range devs {
		hb := d.Heartbeat
		rep := "yes"
		if d.Reporting {
			reporting++
		} else {
			rep = "NO"
		}
		cfg := "-"
		if c := hb.Config; c != nil {
			cfg = c.Source + " " + c.Version
			if c.State != "" && c.State != "ok" {
				cfg += " (" + c.State + ")"
			}
		}
		buffered, unconfirmed := "-", "-"
		if b := hb.Buffer; b != nil {
			buffered, unconfirmed = fmt.Sprint(b.Readings), fmt.Sprint(b.Unconfirmed)
		}
		var failing []string
		for name, s := range hb.Sensors {
			if s.State == "failing" {
				failing = append(failing, name)
			}
		}
		sort.Strings(failing)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\t%s\t%s\t%s\t%s\n", d.ID, rep, hb.State,
			(time.Duration(d.Age) * time.Second).Round(time.Second), orDash(hb.Agent), cfg, buffered, unconfirmed, orDash(strings.Join(failing, ",")))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\n%d devices, %d reporting, %d not reporting\n", len(devs), reporting, len(devs)-reporting)
	versions := map[string]int{}
	for _, d := range devs {
		versions[orDash(d.Heartbeat.Agent)]++
	}
	names := make([]string, 0, len(versions))
	for v := range versions {
		names = append(names, v)
	}
	sort.Strings(names)
	for i, v := range names {
		names[i] = fmt.Sprintf("%s x%d", v, versions[v])
	}
	if len(names) > 0 {
		fmt.Fprintf(w, "versions: %s\n", strings.Join(names, ", "))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
