// Package cli is the edge-agent command line: it parses the first word of
// the arguments and hands the rest to the package that owns that command.
// It maps errors to exit codes: 0 ok, 1 runtime failure, 2 usage or
// configuration error.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/edgepipe/sensorpipe/agent/config"
)

// ErrUsage is wrapped by errors caused by how the command was invoked.
var ErrUsage = errors.New("usage error")

// Usagef returns an error wrapping ErrUsage.
func Usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// ExitCode maps an error returned by Run to the process exit status.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage), errors.Is(err, config.ErrInvalid), errors.Is(err, flag.ErrHelp):
		return 2
	default:
		return 1
	}
}

// Command is one subcommand's entry point.
type Command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// App is the set of subcommands; main wires them so this package does not
// depend on the daemon, the drivers or the buffer.
type App struct {
	Version  string
	Commands map[string]Command // "run", "sensors", "buffer"
}

const usage = `edge-agent reads sensors on a Raspberry Pi and forwards them to MQTT, losing nothing.

Usage:
  edge-agent run [--config FILE]            run the agent (systemd starts this)
  edge-agent sensors [--config FILE] [--json]
                                            probe the machine and read each sensor once
  edge-agent buffer stats|list|export|verify|purge [--db PATH] [--json]
                                            inspect the offline buffer
  edge-agent config check [--config FILE]   validate a config file
  edge-agent version                        print the version

Exit status: 0 ok, 1 runtime failure, 2 usage or configuration error.
`

// Run executes the command named by args[0].
func (a *App) Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return Usagef("no command given")
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "version", "--version":
		fmt.Fprintf(stdout, "edge-agent %s\n", a.Version)
		return nil
	case "config":
		return configCmd(args[1:], stdout, stderr)
	}
	if cmd, ok := a.Commands[args[0]]; ok {
		return cmd(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return Usagef("unknown command %q", args[0])
}

func configCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return Usagef("usage: edge-agent config check [--config FILE]")
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "config file to check")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	cfg, err := config.Load(*path, os.Getenv)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (device %s, %d sensors, buffer %s, mqtt %s)\n",
		*path, cfg.DeviceID, len(cfg.Sensors), cfg.Buffer.Path, cfg.MQTT.URL)
	return nil
}
