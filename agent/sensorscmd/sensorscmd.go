// Package sensorscmd is `edge-agent sensors`: the first command to run on a
// new Pi. It lists the sensors the config names and the ones it finds on
// the machine (the I2C chips it can tell apart at their addresses:
// BME280/BMP280, AHT20, SCD4x, INA219, ADS1x15; IIO dht11 devices; w1
// DS18B20s), reads each configured sensor once and prints the values or
// the exact error with its class (drivers/fault). When the agent runs, it
// also shows each sensor's health as the agent sees it (consecutive
// failures, last good read, last error and its class), from the agent's
// status endpoint (GET /sensors).
//
//	edge-agent sensors --config /etc/edge-agent/config.yaml [--json] [--status ADDR]
//
// Exit status: 0 all configured sensors read, 1 at least one failed, 2 the
// config is invalid or the flags are wrong. It does not publish anything
// or touch the buffer.
package sensorscmd

import (
	"context"
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

	"github.com/edgepipe/sensorpipe/agent/bufhttp"
	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/drivers"
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// ReadTimeout bounds one sensor's Read, retries included (a DHT22 that
// keeps timing out takes about 6 s).
const ReadTimeout = 20 * time.Second

// Report is what the command prints with --json.
type Report struct {
	Config    string `json:"config,omitempty"` // "" when no config file was found
	SysfsRoot string `json:"sysfs_root"`
	// Agent is the running agent's status URL when it answered; the
	// sensors' Health comes from there.
	Agent   string          `json:"agent,omitempty"`
	Sensors []Result        `json:"sensors"`
	Found   []drivers.Found `json:"found"`
	Notes   []string        `json:"notes,omitempty"` // why a kind of device was not found
}

// Result is one configured sensor read once.
type Result struct {
	Name     string             `json:"name"`
	Driver   string             `json:"driver"`
	Kind     string             `json:"kind,omitempty"` // the chip found; empty if Open failed
	OK       bool               `json:"ok"`
	Values   map[string]float64 `json:"values,omitempty"`
	Error    string             `json:"error,omitempty"`
	Class    fault.Class        `json:"class,omitempty"` // of Error: absent, crc, timeout, out_of_range, power_on, other
	Duration string             `json:"duration"`
	// Health is the sensor's health as the running agent sees it (nil
	// when no agent answered, or it does not poll this sensor).
	Health *health.Sensor `json:"health,omitempty"`
}

// Run is the cli.Command wired as "sensors".
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return run(ctx, args, stdout, stderr, nil)
}

// run is Run with the I2C buses opened by openI2C (nil: the real ones).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, openI2C i2cbus.Opener) error {
	flags := flag.NewFlagSet("sensors", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := flags.String("config", config.DefaultPath, "config file naming the sensors")
	asJSON := flags.Bool("json", false, "print a JSON report")
	devDir := flags.String("dev", "/dev", "where to look for i2c-* bus devices")
	status := flags.String("status", "", "the running agent's status address, for its view of the sensors' health (default: the config's status_listen)")
	if err := cmdline.ParseFlags(flags, args); err != nil {
		return err
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
			r := ReadOnce(ctx, spec, drivers.Env{SysfsRoot: cfg.SysfsRoot, Logger: log, OpenI2C: openI2C})
			if !r.OK {
				failed++
			}
			rep.Sensors = append(rep.Sensors, r)
		}
	}
	if cfg != nil {
		if *status == "" {
			*status = cfg.StatusListen
		}
		rep.Notes = append(rep.Notes, agentHealth(ctx, *status, &rep)...)
	}
	found, notes := drivers.Probe(drivers.Env{SysfsRoot: rep.SysfsRoot, OpenI2C: openI2C}, *devDir)
	rep.Found = append(rep.Found, found...)
	rep.Notes = append(rep.Notes, notes...)

	if *asJSON {
		if err := cmdline.PrintJSON(stdout, rep); err != nil {
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

// ReadOnce opens, reads and closes one sensor (also the agent's `sensors`
// fleet command).
func ReadOnce(ctx context.Context, spec drivers.Spec, env drivers.Env) Result {
	start := time.Now()
	r := Result{Name: spec.Name, Driver: spec.Driver}
	s, err := drivers.Open(spec, env)
	if err != nil {
		r.Error, r.Class = err.Error(), fault.Of(err)
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
		r.Error, r.Class = err.Error(), fault.Of(err)
		return r
	}
	r.OK, r.Values = true, v
	return r
}

// agentHealth asks the running agent at status for its view of the
// sensors and attaches it to rep's results; it returns notes saying why
// there is none.
func agentHealth(ctx context.Context, status string, rep *Report) []string {
	if status == "" {
		return []string{"status_listen is empty: the agent's view of the sensors' health is not available"}
	}
	u := bufhttp.StatusURL(status)
	h, err := health.Fetch(ctx, u)
	if err != nil {
		return []string{fmt.Sprintf("no running agent answered at %s, so no health history is shown: %v", u, err)}
	}
	rep.Agent = u
	for i := range rep.Sensors {
		if s, ok := h.Sensors[rep.Sensors[i].Name]; ok {
			rep.Sensors[i].Health = &s
		}
	}
	return nil
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
				result = fmt.Sprintf("FAILED (%s): %s", r.Class, r.Error)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", r.Name, r.Driver, kind, r.Duration, result)
		}
		fmt.Fprintln(tw)
	}
	if rep.Agent != "" {
		printHealth(tw, rep)
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

// printHealth prints the running agent's view of each configured sensor.
func printHealth(tw io.Writer, rep *Report) {
	now := time.Now()
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%s ago (%s)", now.Sub(t).Round(time.Second), t.Local().Format(time.DateTime))
	}
	fmt.Fprintf(tw, "Health as the running agent sees it (%s/sensors):\n", rep.Agent)
	fmt.Fprintf(tw, "  NAME\tSTATE\tFAILURES IN A ROW\tLAST GOOD READ\tLAST ERROR\n")
	for _, r := range rep.Sensors {
		h := r.Health
		if h == nil {
			fmt.Fprintf(tw, "  %s\t-\t-\t-\tnot polled by the running agent (reload or restart it to apply the config)\n", r.Name)
			continue
		}
		last := "-"
		if h.LastErrorClass != "" {
			last = fmt.Sprintf("%s, %s: %s", h.LastErrorClass, ago(h.LastErrorAt), h.LastError)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", r.Name, h.State, h.ConsecutiveFailures, ago(h.LastGood), last)
	}
	fmt.Fprintln(tw)
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
