package bufcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgepipe/sensorpipe/agent/bufhttp"
	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

// LockTimeout is how long the command waits for the buffer file's lock
// before concluding that the agent holds it.
const LockTimeout = 500 * time.Millisecond

const usage = `usage: edge-agent buffer COMMAND [flags]

commands:
  stats                      count, oldest/newest seq and time, live bytes, file size, drops
  list [-n N] [--newest]     the oldest (or newest) N readings
  export [--from SEQ] [--to SEQ]
                             every reading (or a seq range) as JSON lines on stdout
  verify                     check the file: bbolt's check plus every record's checksum and decode
  purge (--all | --upto SEQ) --yes
                             delete readings; refused while the agent runs

flags:
  --db PATH         buffer file (default: the config's buffer.path, else /var/lib/edge-agent/buffer.db)
  --config FILE     agent config, for buffer.path and status_listen (default /etc/edge-agent/config.yaml)
  --status ADDR     the running agent's status address (default: the config's status_listen)
  --json            machine-readable output

While the agent runs it holds the file: stats, list and export then ask the
agent over its status address; verify and purge need the agent stopped.
`

// opts are the parsed flags of one invocation.
type opts struct {
	cmd        string
	db         string
	configPath string
	configSet  bool
	status     string
	hold       time.Duration // clock.hold_unsynced, for the readings a stopped agent would hold
	json       bool
	n          int
	newest     bool
	from, to   uint64
	all, yes   bool
	upto       uint64
	uptoSet    bool
}

// Run is the `edge-agent buffer` command (a cli.Command).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	if err := o.resolve(); err != nil {
		return err
	}
	switch o.cmd {
	case "stats":
		return runStats(ctx, o, stdout)
	case "list":
		return runList(ctx, o, stdout)
	case "export":
		return runExport(ctx, o, stdout)
	case "verify":
		return runVerify(ctx, o, stdout)
	case "purge":
		return runPurge(ctx, o, stdout)
	}
	return cmdline.Usagef("unknown command %q", o.cmd) // parseArgs already refused it
}

// parseArgs accepts flags before and after the command word.
func parseArgs(args []string, stderr io.Writer) (*opts, error) {
	o := &opts{n: bufhttp.DefaultListN, to: math.MaxUint64, configPath: config.DefaultPath}
	fs := flag.NewFlagSet("edge-agent buffer", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.db, "db", "", "")
	fs.Func("config", "", func(s string) error { o.configPath, o.configSet = s, true; return nil })
	fs.StringVar(&o.status, "status", "", "")
	fs.BoolVar(&o.json, "json", false, "")
	fs.IntVar(&o.n, "n", bufhttp.DefaultListN, "")
	fs.BoolVar(&o.newest, "newest", false, "")
	fs.Uint64Var(&o.from, "from", 0, "")
	fs.Uint64Var(&o.to, "to", math.MaxUint64, "")
	fs.BoolVar(&o.all, "all", false, "")
	fs.BoolVar(&o.yes, "yes", false, "")
	fs.Func("upto", "", func(s string) error {
		v, err := strconv.ParseUint(s, 10, 64)
		o.upto, o.uptoSet = v, true
		return err
	})
	bad := func(err error) error {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: buffer: %w", cmdline.ErrUsage, err)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			return nil, err
		}
		return nil, bad(err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return nil, bad(errors.New("no command given"))
	}
	o.cmd = rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			return nil, err
		}
		return nil, bad(err)
	}
	if len(fs.Args()) > 0 {
		return nil, bad(fmt.Errorf("unexpected argument %q", fs.Args()[0]))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	allowed := map[string][]string{
		"stats":  nil,
		"list":   {"n", "newest"},
		"export": {"from", "to"},
		"verify": nil,
		"purge":  {"all", "upto", "yes"},
	}
	own, ok := allowed[o.cmd]
	if !ok {
		return nil, bad(fmt.Errorf("unknown command %q", o.cmd))
	}
	for _, name := range []string{"n", "newest", "from", "to", "all", "upto", "yes"} {
		if set[name] && !contains(own, name) {
			return nil, bad(fmt.Errorf("--%s does not apply to %s", name, o.cmd))
		}
	}
	switch {
	case o.cmd == "list" && (o.n <= 0 || o.n > bufhttp.MaxListN):
		return nil, bad(fmt.Errorf("-n must be between 1 and %d", bufhttp.MaxListN))
	case o.cmd == "export" && o.from > o.to:
		return nil, bad(fmt.Errorf("--from %d is after --to %d", o.from, o.to))
	case o.cmd == "purge" && o.all == o.uptoSet:
		return nil, bad(errors.New("purge needs exactly one of --all or --upto SEQ"))
	}
	return o, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// agentConfig is the part of the agent's config this command reads. It is
// parsed leniently: a config the agent would reject for, say, a missing
// MQTT password still tells us where the buffer is.
type agentConfig struct {
	Buffer struct {
		Path string `yaml:"path"`
	} `yaml:"buffer"`
	StatusListen *string `yaml:"status_listen"`
	Clock        struct {
		HoldUnsynced *time.Duration `yaml:"hold_unsynced"`
	} `yaml:"clock"`
}

// resolve fills --db and --status from the config when not given.
func (o *opts) resolve() error {
	def := config.Default()
	statusFromConfig := def.StatusListen
	o.hold = def.Clock.HoldUnsynced
	b, err := os.ReadFile(o.configPath)
	switch {
	case err == nil:
		var c agentConfig
		if err := yaml.Unmarshal(b, &c); err != nil {
			return &config.Error{Key: "yaml", Msg: fmt.Sprintf("%s: %v", o.configPath, err)}
		}
		if c.Buffer.Path != "" && o.db == "" {
			o.db = c.Buffer.Path
		}
		if c.StatusListen != nil {
			statusFromConfig = *c.StatusListen
		}
		if c.Clock.HoldUnsynced != nil {
			o.hold = *c.Clock.HoldUnsynced
		}
	case o.configSet && o.db == "":
		return fmt.Errorf("%w: --config: %w", cmdline.ErrUsage, err)
	}
	if o.db == "" {
		o.db = def.Buffer.Path
	}
	if o.status == "" {
		o.status = statusFromConfig
	}
	return nil
}

// source is where the data comes from: the file, or the running agent.
type source struct {
	buf    *buffer.Buffer // nil when the agent holds the file
	remote *bufhttp.Client
}

func (s *source) close() {
	if s.buf != nil {
		_ = s.buf.Close()
	}
}

// open opens the file read-only, or, when the agent holds it and remoteOK,
// falls back to the agent's endpoint.
func open(ctx context.Context, o *opts, remoteOK bool) (*source, error) {
	b, err := buffer.OpenReadOnly(o.db, LockTimeout)
	switch {
	case err == nil:
		return &source{buf: b}, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("no buffer file at %s (set --db, or buffer.path in %s): %w", o.db, o.configPath, err)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("cannot read %s: permission denied (try sudo): %w", o.db, err)
	case errors.Is(err, buffer.ErrCorrupt):
		return nil, fmt.Errorf("%s is damaged: %w (the agent moves such a file aside on its next start)", o.db, err)
	case !errors.Is(err, buffer.ErrLocked):
		return nil, err
	}
	if !remoteOK {
		return nil, errAgentHolds
	}
	if o.status == "" {
		return nil, fmt.Errorf("the agent holds %s (it is running) and its status endpoint is disabled (status_listen is empty); "+
			"pass --status ADDR, or stop the agent (sudo systemctl stop edge-agent) to read the file", o.db)
	}
	r := bufhttp.NewClient(o.status)
	if err := r.Ping(ctx); err != nil {
		return nil, fmt.Errorf("the agent holds %s (it is running), and its status endpoint %s did not answer: %w; "+
			"check --status or the config's status_listen, or stop the agent (sudo systemctl stop edge-agent) to read the file",
			o.db, r.Base(), err)
	}
	return &source{remote: r}, nil
}

var errAgentHolds = errors.New("the agent holds the buffer file")

func agentHolds(o *opts, what string) error {
	return fmt.Errorf("the agent holds %s (it is running); %s needs the file itself: "+
		"stop the agent first (sudo systemctl stop edge-agent), then run this again", o.db, what)
}
