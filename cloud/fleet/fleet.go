package fleet

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

// Usage is the help of `cloud-forwarder fleet`.
func Usage() string {
	var b strings.Builder
	b.WriteString(`Usage:
  cloud-forwarder fleet config push (--fleet | --group NAME | --device ID) [--version N] [--dry-run] FILE
        validate FILE (YAML of the remotely changeable keys), sign it, publish it retained
  cloud-forwarder fleet config show DEVICE [--group NAME] [--json]
        the documents in force at each level for DEVICE, and what DEVICE reports applied
  cloud-forwarder fleet cmd DEVICE NAME [--ttl 5m] [--timeout 30s] [--json]
        send a signed command (restart, resend, sensors, buffer-stats), wait for its result, print it
  cloud-forwarder fleet status [--stale 3m] [--broker] [--json]
        every device: reporting or not, config in force, backlog, failing sensors, versions; from the
        sink's database when DATABASE_URL is set (not reporting: silent for 3 status intervals), else
        the broker's retained heartbeats (the monitoring login: FLEET_STATUS_USERNAME, FLEET_STATUS_PASSWORD or _FILE)
  cloud-forwarder fleet release --version X.Y.Z --url https://HOST/PATH/ [--min-version V] DIR
        sign a manifest for each binary edge-agent_X.Y.Z_ARCH in DIR with the release key (RELEASE_KEY_FILE;
        never the fleet key); make release runs it (docs/UPDATE.md)
  cloud-forwarder fleet release verify --keys RELEASE_PUBLIC_KEYS DIR
        check each manifest of DIR as a device would: its signature, and its binary's size and sha256
  cloud-forwarder fleet update publish [MANIFEST...] --group NAME [--percent 10] [--abort-at 20]
        offer a release (its signed manifests) to a share of a group, signed with the fleet key, retained;
        the same version again keeps the rollout and changes the percent (docs/UPDATE.md)
  cloud-forwarder fleet update status --group NAME [--json] [--no-abort]
        each device's stage in the group's rollout, counts, failures; aborts the rollout when the failures
        reached --abort-at (exit 1)
  cloud-forwarder fleet update abort --group NAME
        stop the group's rollout: devices that have not taken it never will
  cloud-forwarder fleet keygen [--release] PRIVATE_FILE PUBLIC_FILE
        make a fleet key pair (the private key file is 0600; give the public one to the devices' fleet.keys_file),
        or with --release a release key pair (RELEASE_KEY_FILE; the public one goes to update.keys_file)

Environment:
`)
	for _, v := range Vars {
		def := ""
		if v.Default != "" {
			def = " (default " + v.Default + ")"
		}
		fmt.Fprintf(&b, "  %-22s %s%s\n", v.Name, v.Meaning, def)
	}
	return b.String()
}

// Run is `cloud-forwarder fleet ARGS`; getenv supplies the environment.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, Usage())
		return cmdline.Usagef("fleet: no command given")
	}
	switch {
	case isHelp(args[0]) || args[0] == "config" && (len(args) == 1 || isHelp(args[1])):
		fmt.Fprint(stdout, Usage())
		return nil
	case args[0] == "keygen":
		return keygen(args[1:], stdout, stderr)
	case args[0] == "release" && len(args) > 1 && args[1] == "verify":
		return releaseVerify(args[2:], stdout, stderr)
	case args[0] == "release":
		return releaseSign(args[1:], getenv, stdout, stderr)
	case args[0] == "update":
		return update(ctx, args[1:], getenv, stdout, stderr)
	case args[0] == "status":
		return status(ctx, args[1:], getenv, stdout, stderr)
	case args[0] == "cmd":
		return command(ctx, args[1:], getenv, stdout, stderr)
	case args[0] == "config" && len(args) > 1 && args[1] == "push":
		return push(ctx, args[2:], getenv, stdout, stderr)
	case args[0] == "config" && len(args) > 1 && args[1] == "show":
		return show(ctx, args[2:], getenv, stdout, stderr)
	}
	fmt.Fprint(stderr, Usage())
	return cmdline.Usagef("fleet: unknown command %q", strings.Join(args, " "))
}

func isHelp(a string) bool { return a == "help" || a == "-h" || a == "--help" }

// parse parses fs with interleaved flags and n positional arguments (any
// number when n < 0).
func parse(fs *flag.FlagSet, args []string, n int, names string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", cmdline.ErrUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if n >= 0 && len(pos) != n {
		return nil, cmdline.Usagef("%s needs %s", fs.Name(), names)
	}
	return pos, nil
}
