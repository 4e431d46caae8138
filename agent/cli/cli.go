// Package cli is the edge-agent command line: it parses the first word of
// the arguments and hands the rest to the package that owns that command.
// Exit codes come from buffer/cmdline, shared with cloud-forwarder: 0 ok,
// 1 runtime failure, 2 usage or configuration error.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

// Command is one subcommand's entry point.
type Command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// App is the set of subcommands; main wires them so this package does not
// depend on the daemon, the drivers or the buffer.
type App struct {
	Version  string
	Commands map[string]Command // "run", "sensors", "buffer", "update"
}

const usage = `edge-agent reads sensors on a Raspberry Pi and forwards them to MQTT, losing nothing.

Usage:
  edge-agent run [--config FILE]            run the agent (systemd starts this)
  edge-agent sensors [--config FILE] [--json]
                                            probe the machine and read each sensor once
  edge-agent buffer stats|list|export|verify|purge [--db PATH] [--json]
                                            inspect the offline buffer
  edge-agent config check [--config FILE]   validate a config file
  edge-agent update guard|status [--config FILE] [--json]
                                            over-the-air updates: roll back a trial past its
                                            deadline (the guard timer runs it); print state.json
  edge-agent version                        print the version

Exit status: 0 ok, 1 runtime failure, 2 usage or configuration error.
`

// Run executes the command named by args[0].
func (a *App) Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cmdline.Usagef("no command given")
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
	return cmdline.Usagef("unknown command %q", args[0])
}

func configCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return cmdline.Usagef("usage: edge-agent config check [--config FILE]")
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "config file to check")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %w", cmdline.ErrUsage, err)
	}
	cfg, err := config.Load(*path, os.Getenv)
	if err != nil {
		return err
	}
	if err := cfg.Strict(); err != nil {
		// run accepts this config (an upgrade never stops a Pi); check
		// tells the operator what to finish.
		return fmt.Errorf("%s: %w", *path, err)
	}
	fmt.Fprintf(stdout, "%s: ok (device %s, %d sensors, buffer %s, mqtt %s)\n",
		*path, cfg.DeviceID, len(cfg.Sensors), cfg.Buffer.Path, cfg.MQTT.URL)
	return nil
}
