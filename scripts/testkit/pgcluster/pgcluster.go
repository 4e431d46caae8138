// Package pgcluster runs a throwaway PostgreSQL server from the machine's
// own binaries (Debian's postgresql package puts them in
// /usr/lib/postgresql/NN/bin): initdb into a fresh directory, then the
// postmaster as a child process listening on 127.0.0.1 and on a unix socket
// in that directory, with trust authentication. Tests, the demo, the e2e
// harness and the benchmarks use it; nothing in production does.
//
// initdb refuses to run as root, so when the caller is root the cluster's
// directory is given to the `postgres` user and both programs run under
// its uid and gid.
//
// It does not install PostgreSQL: Find reports ErrNotFound, and the test
// helper (ForTest, Shared) turns that into a skip, or a failure with CI=true.
//
// Example:
//
//	c, err := pgcluster.Start(ctx, pgcluster.Options{})
//	defer c.Remove()
//	url, err := c.CreateDatabase(ctx, "demo") // postgres://postgres@127.0.0.1:PORT/demo?sslmode=disable
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotFound is returned by Find (and Start) when no PostgreSQL server
// binaries are on the machine.
var ErrNotFound = errors.New("no PostgreSQL server binaries (initdb, postgres) found: install Debian's postgresql package")

// Superuser is the role initdb creates; trust authentication, no password.
const Superuser = "postgres"

// Find returns the directory holding initdb and postgres: the one on $PATH,
// else the newest /usr/lib/postgresql/*/bin.
func Find() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNotFound
}

// version is the NN of /usr/lib/postgresql/NN/bin, 0 if it is not a number.
func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Options tune Start; zero values are sensible.
type Options struct {
	// BinDir holds initdb and postgres; empty: Find.
	BinDir string
	// Parent is where the cluster's directory is made; empty: the system
	// temp dir. When running as root it must be traversable by the
	// postgres user.
	Parent string
	// Port to listen on at 127.0.0.1; 0 picks a free one. It stays the same
	// across Stop and Start.
	Port int
	// Settings are extra server settings (postgres -c name=value).
	Settings map[string]string
}

// Cluster is one running (or stopped) throwaway server.
type Cluster struct {
	Dir  string // the cluster's directory: data/ inside, the socket and server.log beside it
	Port int

	bin      string
	settings map[string]string
	cred     *syscall.Credential

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start creates a cluster with initdb and starts the server, waiting until
// it accepts connections.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	bin := o.BinDir
	if bin == "" {
		var err error
		if bin, err = Find(); err != nil {
			return nil, err
		}
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(o.Parent, "pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Port: o.Port, bin: bin, settings: o.Settings, cred: cred}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if c.Port == 0 {
		if c.Port, err = freePort(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	initdb := c.command(ctx, "initdb", "-D", c.dataDir(), "-U", Superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb in %s: %w\n%s", dir, err, out)
	}
	if err := c.Start(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.Dir, "data") }

// LogPath is the server's log file.
func (c *Cluster) LogPath() string { return filepath.Join(c.Dir, "server.log") }

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	return cmd
}

// credential is the postgres user's, when we are root (initdb refuses root).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and initdb refuses root: need a postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Start starts the server (again, after Stop or Kill) on the same port and
// waits up to 30 s until it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		select {
		case <-c.done:
		default:
			return errors.New("pgcluster: already running")
		}
	}
	args := []string{"-D", c.dataDir(), "-p", strconv.Itoa(c.Port), "-k", c.Dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "logging_collector=off"}
	keys := make([]string, 0, len(c.settings))
	for k := range c.settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+c.settings[k])
	}
	logf, err := os.OpenFile(c.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// Not CommandContext: the server outlives the ctx of the call that started it.
	cmd := c.command(context.Background(), "postgres", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C at the terminal reaches the caller,
	// which stops the server in order; the server dies with its parent.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	c.cmd, c.done = cmd, done
	return c.waitReady(ctx, done)
}

func (c *Cluster) waitReady(ctx context.Context, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("postgres exited at start; last lines of %s:\n%s", c.LogPath(), c.logTail(10))
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready: %w; last lines of %s:\n%s", err, c.LogPath(), c.logTail(10))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) logTail(n int) string {
	b, _ := os.ReadFile(c.LogPath())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop shuts the server down with a fast shutdown (SIGINT: active
// transactions are rolled back, committed ones stay) and waits for it.
func (c *Cluster) Stop() error { return c.signal(syscall.SIGINT, 60*time.Second) }

// Crash stops the server with an immediate shutdown (SIGQUIT: no
// checkpoint, crash recovery on the next Start), as a power cut of the
// database host would, minus the disk cache.
func (c *Cluster) Crash() error { return c.signal(syscall.SIGQUIT, 30*time.Second) }

func (c *Cluster) signal(sig syscall.Signal, wait time.Duration) error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return nil
	case <-time.After(wait):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("postgres did not stop within %v of %v; killed", wait, sig)
	}
}

// Remove stops the server and deletes the cluster's directory.
func (c *Cluster) Remove() error {
	err := c.Stop()
	return errors.Join(err, os.RemoveAll(c.Dir))
}

// URL is a libpq URL for database db over TCP on 127.0.0.1, as the superuser.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.Port, db)
}

// SocketURL is a libpq URL for database db over the unix socket.
func (c *Cluster) SocketURL(db string) string {
	return fmt.Sprintf("postgres://%s@/%s?host=%s&port=%d", Superuser, db, c.Dir, c.Port)
}

// CreateDatabase creates database name (a plain identifier) and returns its URL.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return c.URL(name), nil
}
