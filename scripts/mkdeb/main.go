// Command mkdeb builds the edge-agent .deb packages with nfpm (no dpkg
// needed on the build machine). Each package installs the binary as
// /usr/bin/edge-agent (also the launcher of over-the-air versions, which
// live in /var/lib/edge-agent/update: docs/UPDATE.md), the unit as
// /lib/systemd/system/edge-agent.service, the update guard's service and
// timer beside it, and the commented default config as the conffile
// /etc/edge-agent/config.yaml; its maintainer scripts (maint/) create the
// edge-agent user in groups i2c and gpio and enable the service and the
// guard's timer.
//
//	go run ./scripts/mkdeb -version v1.2.0 -out dist \
//	    armhf=dist/edge-agent_linux_armv6 arm64=dist/edge-agent_linux_arm64
//
// armhf packages take the armv6 binary: Raspberry Pi OS's armhf is ARMv6,
// so one package serves the Pi Zero/1 and the Pi 2/3 alike.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"embed"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

//go:embed maint/postinst maint/prerm maint/postrm maint/copyright maint/lintian-overrides maint/modules-load.conf
var maint embed.FS

const maintainer = "sensorpipe <sensorpipe@edgepipe.invalid>"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkdeb: %v\n", err)
	}
	os.Exit(cmdline.ExitCode(err))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkdeb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	version := fs.String("version", "0.0.0", "package version (git describe output is made Debian-valid)")
	out := fs.String("out", "dist", "directory for the .deb files")
	root := fs.String("root", ".", "repository root (systemd/ is read from here)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mkdeb [-version V] [-out DIR] [-root DIR] DEBARCH=BINARY...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", cmdline.ErrUsage, err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: no DEBARCH=BINARY given", cmdline.ErrUsage)
	}
	v := DebVersion(*version)
	scripts, err := writeAux(v)
	if err != nil {
		return err
	}
	defer os.RemoveAll(scripts)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, a := range fs.Args() {
		if err := ctx.Err(); err != nil {
			return err
		}
		arch, bin, ok := strings.Cut(a, "=")
		if !ok || arch == "" || bin == "" {
			return fmt.Errorf("%w: %q is not DEBARCH=BINARY", cmdline.ErrUsage, a)
		}
		info := Info(arch, v, bin, *root, scripts)
		path := filepath.Join(*out, fmt.Sprintf("edge-agent_%s_%s.deb", v, arch))
		if err := build(info, path); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		fmt.Fprintln(stdout, path)
	}
	return nil
}

// writeAux puts the embedded maintainer scripts and the generated doc
// files (copyright, changelog.gz, lintian overrides, modules-load.d) in a temp dir,
// because nfpm reads contents and scripts from paths.
func writeAux(version string) (string, error) {
	dir, err := os.MkdirTemp("", "mkdeb-")
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(dir)
		return "", err
	}
	for _, n := range []string{"postinst", "prerm", "postrm", "copyright", "lintian-overrides", "modules-load.conf"} {
		b, err := maint.ReadFile("maint/" + n)
		if err != nil {
			return fail(err)
		}
		mode := os.FileMode(0o644)
		if n == "postinst" || n == "prerm" || n == "postrm" {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, mode); err != nil {
			return fail(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "changelog.gz"), Changelog(version, buildDate), 0o644); err != nil {
		return fail(err)
	}
	return dir, nil
}

// buildDate is fixed so that the same inputs give the same package.
var buildDate = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Changelog returns a gzipped (no name, no time: reproducible) Debian
// changelog with one entry for version.
func Changelog(version string, date time.Time) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	fmt.Fprintf(zw, "edge-agent (%s) stable; urgency=medium\n\n"+
		"  * Built from the sensorpipe repository by scripts/mkdeb.\n\n"+
		" -- %s  %s\n", version, maintainer, date.Format(time.RFC1123Z))
	zw.Close()
	return buf.Bytes()
}

var (
	notDebVersion = regexp.MustCompile(`[^A-Za-z0-9.+~]`)
	// released matches a tag like 1.2 or 1.2.0; a bare commit hash such as
	// 6723d64 also starts with a digit but has no dot.
	released = regexp.MustCompile(`^[0-9]+\.[0-9]`)
)

// DebVersion turns `git describe` output into a Debian version: "v1.2.0" is
// "1.2.0", "v1.2.0-3-gabc123" is "1.2.0+3.gabc123", and a bare commit
// "abc123-dirty" is "0.0.0~gitabc123.dirty" (sorting before any release).
// Debian versions must start with a digit and have no '-' (that would
// mean a Debian revision).
func DebVersion(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	if s == "" {
		return "0.0.0"
	}
	if released.MatchString(s) {
		head, rest, _ := strings.Cut(s, "-")
		if rest == "" {
			return notDebVersion.ReplaceAllString(head, ".")
		}
		return notDebVersion.ReplaceAllString(head, ".") + "+" + notDebVersion.ReplaceAllString(rest, ".")
	}
	return "0.0.0~git" + notDebVersion.ReplaceAllString(s, ".")
}

// Info describes one package; root is the repository root and scripts the
// directory holding postinst, prerm and postrm.
func Info(arch, version, bin, root, scripts string) *nfpm.Info {
	return nfpm.WithDefaults(&nfpm.Info{
		Name:          "edge-agent",
		Arch:          arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "misc",
		Priority:      "optional",
		Maintainer:    maintainer,
		Description: "Raspberry Pi sensors to MQTT, losing nothing\n" +
			"edge-agent polls BME280, DHT22 and DS18B20 sensors, keeps every reading\n" +
			"in an fsync'd bbolt buffer and publishes it to MQTT (HiveMQ) with QoS 1.",
		Homepage: "https://github.com/edgepipe/sensorpipe",
		MTime:    buildDate,
		Overridables: nfpm.Overridables{
			// passwd: useradd/groupadd in postinst; procps: /bin/kill for ExecReload.
			// deb-systemd-helper comes from init-system-helpers, which is essential.
			Depends: []string{"passwd", "procps"},
			Contents: files.Contents{
				{Source: bin, Destination: "/usr/bin/edge-agent",
					FileInfo: &files.ContentFileInfo{Mode: 0o755}},
				{Source: filepath.Join(root, "systemd/edge-agent.service"),
					Destination: "/lib/systemd/system/edge-agent.service",
					FileInfo:    &files.ContentFileInfo{Mode: 0o644}},
				{Source: filepath.Join(root, "systemd/edge-agent-update-guard.service"),
					Destination: "/lib/systemd/system/edge-agent-update-guard.service",
					FileInfo:    &files.ContentFileInfo{Mode: 0o644}},
				{Source: filepath.Join(root, "systemd/edge-agent-update-guard.timer"),
					Destination: "/lib/systemd/system/edge-agent-update-guard.timer",
					FileInfo:    &files.ContentFileInfo{Mode: 0o644}},
				{Source: filepath.Join(root, "systemd/edge-agent.config.yaml"),
					Destination: "/etc/edge-agent/config.yaml", Type: files.TypeConfigNoReplace,
					FileInfo: &files.ContentFileInfo{Mode: 0o644}},
				{Source: filepath.Join(root, "systemd/config.example.yaml"),
					Destination: "/usr/share/doc/edge-agent/config.example.yaml",
					FileInfo:    &files.ContentFileInfo{Mode: 0o644}},
				{Source: filepath.Join(scripts, "copyright"),
					Destination: "/usr/share/doc/edge-agent/copyright",
					FileInfo:    &files.ContentFileInfo{Mode: 0o644}},
				{Source: filepath.Join(scripts, "changelog.gz"),
					Destination: "/usr/share/doc/edge-agent/changelog.gz",
					FileInfo:    &files.ContentFileInfo{Mode: 0o644}},
				{Source: filepath.Join(scripts, "modules-load.conf"),
					Destination: "/usr/lib/modules-load.d/edge-agent.conf",
					FileInfo:    &files.ContentFileInfo{Mode: 0o644}},
				{Source: filepath.Join(scripts, "lintian-overrides"),
					Destination: "/usr/share/lintian/overrides/edge-agent",
					FileInfo:    &files.ContentFileInfo{Mode: 0o644}},
			},
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(scripts, "postinst"),
				PreRemove:   filepath.Join(scripts, "prerm"),
				PostRemove:  filepath.Join(scripts, "postrm"),
			},
		},
	})
}

func build(info *nfpm.Info, path string) error {
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
