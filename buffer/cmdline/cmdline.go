// Package cmdline holds the conventions every command of edge-agent and
// cloud-forwarder follows at its edges, so both binaries behave alike:
//
//   - exit status: 0 ok, 1 runtime failure, 2 usage or configuration error
//     (ExitCode); an error wrapping ErrUsage, which both config packages'
//     ErrInvalid does, or flag.ErrHelp, is a 2;
//   - log format: text on a terminal, JSON under systemd and in containers
//     (NewLogger);
//   - --json output: one value, indented by two spaces (PrintJSON).
//
// It lives beside the wire formats because both binaries share it.
//
//	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
//	os.Exit(cmdline.ExitCode(err))
package cmdline

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
)

// ErrUsage is wrapped by errors in how a command was invoked or configured.
var ErrUsage = errors.New("usage error")

// Usagef returns an error wrapping ErrUsage.
func Usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// NewUsageError returns a sentinel error with its own message that wraps
// ErrUsage, for a package's own kind of usage error (both config packages'
// ErrInvalid): callers branch on it with errors.Is, and ExitCode makes it 2.
func NewUsageError(msg string) error { return &usageError{msg} }

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return ErrUsage }

// ParseFlags parses a subcommand's flags, which take no positional
// arguments: flag.ErrHelp comes back as is (the FlagSet printed the help),
// and a bad flag or an extra argument wraps ErrUsage.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return Usagef("%s takes no arguments, got %q", fs.Name(), fs.Args())
	}
	return nil
}

// ExitCode maps a command's error to the process exit status.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage), errors.Is(err, flag.ErrHelp):
		return 2
	default:
		return 1
	}
}

// NewLogger returns the programs' logger: format "text" or "json", or
// "auto" (also "") for text when w is a terminal and JSON otherwise. A
// *slog.LevelVar as level lets the level change while the program runs.
func NewLogger(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	ho := &slog.HandlerOptions{Level: level}
	if format == "text" || (format == "auto" || format == "") && isTerminal(w) {
		return slog.New(slog.NewTextHandler(w, ho))
	}
	return slog.New(slog.NewJSONHandler(w, ho))
}

// PrintJSON writes v as a command's --json output: indented by two
// spaces, ending in a newline, so scripts and people read the same.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
