// Package sensorscmd is `edge-agent sensors`: the first command to run on a
// new Pi. It lists the sensors the config names and the ones it finds on
// the machine (BME280/BMP280 answering on I2C, IIO dht11 devices, w1
// DS18B20s), reads each configured sensor once and prints the values or
// the exact error.
//
//	edge-agent sensors --config /etc/edge-agent/config.yaml [--json]
//
// Exit status: 0 all configured sensors read, 1 at least one failed, 2 the
// config is invalid or the flags are wrong. It does not publish anything
// or touch the buffer.
package sensorscmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/drivers"
)

// ReadTimeout bounds one sensor's Read, retries included (a DHT22 that
// keeps timing out takes about 6 s).
const ReadTimeout = 20 * time.Second

// Report is what the command prints with --json.
type Report struct {
	Config    string          `json:"config,omitempty"` // "" when no config file was found
	SysfsRoot string          `json:"sysfs_root"`
	Sensors   []Result        `json:"sensors"`
	Found     []drivers.Found `json:"found"`
	Notes     []string        `json:"notes,omitempty"` // why a kind of device was not found
}

// Result is one configured sensor read once.
type Result struct {
	Name     string             `json:"name"`
	Driver   string             `json:"driver"`
	Kind     string             `json:"kind,omitempty"` // the chip found; empty if Open failed
	OK       bool               `json:"ok"`
	Values   map[string]float64 `json:"values,omitempty"`
	Error    string             `json:"error,omitempty"`
	Duration string             `json:"duration"`
}

// Run is the cli.Command wired as "sensors".
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("sensors", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := flags.String("config", config.DefaultPath, "config file naming the sensors")
	asJSON := flags.Bool("json", false, "print a JSON report")
	devDir := flags.String("dev", "/dev", "where to look for i2c-* bus devices")
	if err := flags.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", cmdline.ErrUsage, err)
	}
	if flags.NArg() > 0 {
		return cmdline.Usagef("sensors takes no arguments, got %q", flags.Args())
	}
	explicit := false
	flags.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })

	rep := Report{SysfsRoot: "/sys", Sensors: []Result{}, Found: []drivers.Found{}}
	cfg, err := config.Load(*path, os.Getenv)
	switch {
	case err == nil:
		rep.Config = *path
		rep.SysfsRoot = cfg.SysfsRoot
	case !explicit && errors.Is(err, fs.ErrNotExist):
		// A new Pi has no config yet: still show what is there.
		rep.Notes = append(rep.Notes, fmt.Sprintf("no config at %s; only probing the machine", *path))
	case errors.Is(err, config.ErrInvalid):
		return err
	default:
		return fmt.Errorf("%w: %w", config.ErrInvalid, err) // unreadable config: exit 2
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	failed := 0
	if cfg != nil {
		for _, spec := range cfg.Sensors {
			r := readOnce(ctx, spec, drivers.Env{SysfsRoot: cfg.SysfsRoot, Logger: log})
			if !r.OK {
				failed++
			}
			rep.Sensors = append(rep.Sensors, r)
		}
	}
	found, notes := drivers.Probe(drivers.Env{SysfsRoot: rep.SysfsRoot}, *devDir)
	rep.Found = append(rep.Found, found...)
	rep.Notes = append(rep.Notes, notes...)

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printHuman(stdout, &rep)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d configured sensors failed", failed, len(rep.Sensors))
	}
	return nil
}

// readOnce opens, reads and closes one sensor.
func readOnce(ctx context.Context, spec drivers.Spec, env drivers.Env) Result {
	start := time.Now()
	r := Result{Name: spec.Name, Driver: spec.Driver}
	s, err := drivers.Open(spec, env)
	if err != nil {
		r.Error = err.Error()
		r.Duration = time.Since(start).Round(time.Millisecond).String()
		return r
	}
	defer s.Close()
	r.Kind = s.Kind()
	ctx, cancel := context.WithTimeout(ctx, ReadTimeout)
	defer cancel()
	v, err := s.Read(ctx)
	r.Duration = time.Since(start).Round(time.Millisecond).String()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.OK, r.Values = true, v
	return r
}

func printHuman(w io.Writer, rep *Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if rep.Config != "" {
		fmt.Fprintf(tw, "Configured sensors (%s):\n", rep.Config)
		fmt.Fprintf(tw, "  NAME\tDRIVER\tKIND\tTIME\tRESULT\n")
		for _, r := range rep.Sensors {
			kind := r.Kind
			if kind == "" {
				kind = "-"
			}
			result := "ok  " + formatValues(r.Values)
			if !r.OK {
				result = "FAILED: " + r.Error
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", r.Name, r.Driver, kind, r.Duration, result)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "Found on this machine (sysfs %s):\n", rep.SysfsRoot)
	if len(rep.Found) == 0 {
		fmt.Fprintf(tw, "  nothing\n")
	}
	for _, f := range rep.Found {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Type, f.ID, f.Kind)
	}
	tw.Flush()
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func formatValues(v map[string]float64) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%g", k, v[k])
	}
	return b.String()
}
