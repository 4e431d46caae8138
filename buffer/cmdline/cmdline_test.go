package cmdline_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

func TestExitCode(t *testing.T) {
	configErr := cmdline.NewUsageError("invalid configuration") // as the config packages' ErrInvalid
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("broker unreachable"), 1},
		{cmdline.Usagef("unknown command %q", "x"), 2},
		{fmt.Errorf("load: %w", configErr), 2},
		{flag.ErrHelp, 2},
		{configErr, 2},
	} {
		if got := cmdline.ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestNewUsageErrorKeepsItsText(t *testing.T) {
	e := cmdline.NewUsageError("invalid configuration")
	if e.Error() != "invalid configuration" || !errors.Is(fmt.Errorf("x: %w", e), e) {
		t.Fatalf("%q", e)
	}
}

func TestNewLoggerFormat(t *testing.T) {
	for _, tt := range []struct{ format, want string }{{"json", `{"time"`}, {"auto", `{"time"`}, {"text", "time="}} {
		var b bytes.Buffer // not a terminal: auto is JSON
		cmdline.NewLogger(&b, tt.format, slog.LevelInfo).Info("hello")
		if !strings.HasPrefix(b.String(), tt.want) {
			t.Errorf("format %s wrote %q, want it to start with %q", tt.format, b.String(), tt.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
	}{{nil, 0}, {[]string{"-n", "3"}, 0}, {[]string{"-x"}, 2}, {[]string{"extra"}, 2}, {[]string{"-h"}, 2}} {
		fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Int("n", 0, "")
		err := cmdline.ParseFlags(fs, tt.args)
		if got := cmdline.ExitCode(err); got != tt.code {
			t.Errorf("%q: %v, exit %d, want %d", tt.args, err, got, tt.code)
		}
	}
}

func TestPrintJSON(t *testing.T) {
	var b bytes.Buffer
	if err := cmdline.PrintJSON(&b, map[string]any{"device": "pi-1", "seqs": []int{1}}); err != nil {
		t.Fatal(err)
	}
	const want = "{\n  \"device\": \"pi-1\",\n  \"seqs\": [\n    1\n  ]\n}\n"
	if b.String() != want {
		t.Errorf("PrintJSON wrote %q, want %q", b.String(), want)
	}
	if err := cmdline.PrintJSON(&b, func() {}); err == nil {
		t.Error("PrintJSON of a func: no error")
	}
}
