package brokerauth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgepipe/sensorpipe/buffer/atomicfile"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

// ReadLogins parses a logins file: one login a line, "ROLE NAME
// PASSWORD_FILE" (role device, forwarder, operator or monitor), blank
// lines and "#" comments ignored. A relative PASSWORD_FILE is taken from
// dir. The password is the file's content without its final newline.
func ReadLogins(r io.Reader, dir string) ([]Login, error) {
	var logins []Login
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("%w: line %d: want ROLE NAME PASSWORD_FILE, got %q", ErrLogin, n, strings.TrimSpace(line))
		}
		path := f[2]
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		pw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("line %d: password of %q: %w", n, f[1], err)
		}
		logins = append(logins, Login{Role: Role(f[0]), Name: f[1], Password: string(bytes.TrimRight(pw, "\r\n"))})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(logins) == 0 {
		return nil, fmt.Errorf("%w: no logins", ErrLogin)
	}
	return logins, checkLogins(logins)
}

// Run is `cloud-forwarder broker-auth`: it writes the broker set-ups for
// the logins of a logins file, or prints the table.
func Run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker-auth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	loginsPath := fs.String("logins", "", "logins file: one \"ROLE NAME PASSWORD_FILE\" a line (roles: device, forwarder, operator, monitor)")
	prefix := fs.String("prefix", "sensors", "the devices' mqtt.topic_prefix")
	mosq := fs.String("mosquitto", "", "write mosquitto's dynamic-security plugin file here (plugin_opt_config_file)")
	hive := fs.String("hivemq", "", "write the HiveMQ File RBAC extension's credentials.xml here")
	table := fs.Bool("table", false, "print the permission table (Markdown) and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: cloud-forwarder broker-auth --logins FILE [--mosquitto FILE] [--hivemq FILE] [--prefix sensors]\n"+
			"       cloud-forwarder broker-auth --table\n\n"+
			"Writes the broker's permissions for every login from the one permission table (docs/FORWARDER.md).\n\n")
		fs.PrintDefaults()
	}
	if err := cmdline.ParseFlags(fs, args); err != nil {
		return err
	}
	if strings.ContainsAny(*prefix, "+#$") || *prefix == "" {
		return cmdline.Usagef("--prefix %q: want a topic prefix without wildcards or $", *prefix)
	}
	if *table {
		_, err := io.WriteString(stdout, Markdown(*prefix))
		return err
	}
	if *loginsPath == "" || (*mosq == "" && *hive == "") {
		fs.Usage()
		return cmdline.Usagef("--logins and at least one of --mosquitto, --hivemq are required")
	}
	f, err := os.Open(*loginsPath)
	if err != nil {
		return cmdline.Usagef("--logins: %v", err)
	}
	defer f.Close()
	logins, err := ReadLogins(f, filepath.Dir(*loginsPath))
	if err != nil {
		return fmt.Errorf("--logins %s: %w", *loginsPath, err)
	}
	for _, out := range []struct {
		path string
		gen  func(string, []Login, io.Reader) ([]byte, error)
	}{{*mosq, DynSec}, {*hive, HiveMQ}} {
		if out.path == "" {
			continue
		}
		b, err := out.gen(*prefix, logins, rand.Reader)
		if err != nil {
			return err
		}
		if err := writeFile(out.path, b); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %s (%d logins)\n", out.path, len(logins))
	}
	return nil
}

// writeFile replaces path with b, readable by its owner only (it holds
// password hashes), atomically: a broker never reads half.
func writeFile(path string, b []byte) error {
	return atomicfile.WriteFile(path, b, 0o600)
}
