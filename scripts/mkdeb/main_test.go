package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

func TestUsage(t *testing.T) {
	var stderr bytes.Buffer
	for _, args := range [][]string{{}, {"amd64"}, {"-bogus"}} {
		err := run(context.Background(), args, io.Discard, &stderr)
		if !errors.Is(err, cmdline.ErrUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.0":                 "1.2.0",
		"1.2.0":                  "1.2.0",
		"v1.2.0-3-gabc123":       "1.2.0+3.gabc123",
		"v1.2.0-3-gabc123-dirty": "1.2.0+3.gabc123.dirty",
		"abc123":                 "0.0.0~gitabc123",
		"abc123-dirty":           "0.0.0~gitabc123.dirty",
		"6723d64-dirty":          "0.0.0~git6723d64.dirty",
		"":                       "0.0.0",
	} {
		if got := DebVersion(in); got != want {
			t.Errorf("DebVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDebs builds the three packages from a real edge-agent binary and
// inspects them with dpkg-deb, the way dpkg will see them.
func TestDebs(t *testing.T) {
	dpkgDeb := testkit.NeedTool(t, "dpkg-deb", "dpkg")
	dir := t.TempDir()
	// Real binaries for each architecture, built as `make pi` does
	// (lintian rejects a foreign or unstripped binary).
	bins := map[string]string{}
	for arch, env := range map[string][]string{
		"armhf": {"GOARCH=arm", "GOARM=6"}, "arm64": {"GOARCH=arm64"}, "amd64": {"GOARCH=amd64"},
	} {
		bins[arch] = filepath.Join(dir, "edge-agent-"+arch)
		build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bins[arch], "../../agent/cmd/edge-agent")
		build.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux"), env...)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", arch, err, out)
		}
	}
	// mkdeb runs as its own (non-race) binary: gzip under the race
	// detector would take minutes for three 13 MB packages.
	mkdeb := filepath.Join(dir, "mkdeb")
	if out, err := exec.Command("go", "build", "-o", mkdeb, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build mkdeb: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "dist")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(mkdeb, "-version", "v1.2.0-3-gabc123", "-out", out, "-root", "../..",
		"armhf="+bins["armhf"], "arm64="+bins["arm64"], "amd64="+bins["amd64"])
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mkdeb: %v\n%s", err, stderr.String())
	}
	var debs []string
	for _, arch := range []string{"armhf", "arm64", "amd64"} {
		deb := filepath.Join(out, "edge-agent_1.2.0+3.gabc123_"+arch+".deb")
		debs = append(debs, deb)
		t.Run(arch, func(t *testing.T) {
			if !strings.Contains(stdout.String(), deb) {
				t.Fatalf("mkdeb did not report %s:\n%s", deb, stdout.String())
			}
			field := func(f string) string {
				b, err := exec.Command(dpkgDeb, "-f", deb, f).Output()
				if err != nil {
					t.Fatalf("dpkg-deb -f %s: %v", f, err)
				}
				return strings.TrimSpace(string(b))
			}
			for f, want := range map[string]string{
				"Package": "edge-agent", "Architecture": arch, "Version": "1.2.0+3.gabc123", "Depends": "passwd, procps",
			} {
				if got := field(f); got != want {
					t.Errorf("%s = %q, want %q", f, got, want)
				}
			}
			list, err := exec.Command(dpkgDeb, "-c", deb).Output()
			if err != nil {
				t.Fatal(err)
			}
			modes := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(string(list)), "\n") {
				f := strings.Fields(l)
				modes[f[len(f)-1]] = f[0] + " " + f[1]
			}
			for path, want := range map[string]string{
				"./usr/bin/edge-agent":                                 "-rwxr-xr-x root/root",
				"./lib/systemd/system/edge-agent.service":              "-rw-r--r-- root/root",
				"./lib/systemd/system/edge-agent-update-guard.service": "-rw-r--r-- root/root",
				"./lib/systemd/system/edge-agent-update-guard.timer":   "-rw-r--r-- root/root",
				"./etc/edge-agent/config.yaml":                         "-rw-r--r-- root/root",
				"./usr/share/doc/edge-agent/config.example.yaml":       "-rw-r--r-- root/root",
				"./usr/share/doc/edge-agent/copyright":                 "-rw-r--r-- root/root",
				"./usr/share/doc/edge-agent/changelog.gz":              "-rw-r--r-- root/root",
				"./usr/share/lintian/overrides/edge-agent":             "-rw-r--r-- root/root",
				"./usr/lib/modules-load.d/edge-agent.conf":             "-rw-r--r-- root/root",
			} {
				if modes[path] != want {
					t.Errorf("%s: %q, want %q (dpkg-deb -c:\n%s)", path, modes[path], want, list)
				}
			}
			ctl := filepath.Join(t.TempDir(), "DEBIAN")
			if out, err := exec.Command(dpkgDeb, "-e", deb, ctl).CombinedOutput(); err != nil {
				t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
			}
			conffiles, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
			if strings.TrimSpace(string(conffiles)) != "/etc/edge-agent/config.yaml" {
				t.Errorf("conffiles = %q", conffiles)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				fi, err := os.Stat(filepath.Join(ctl, s))
				if err != nil {
					t.Fatalf("no %s: %v", s, err)
				}
				if fi.Mode().Perm() != 0o755 {
					t.Errorf("%s mode %v", s, fi.Mode())
				}
				got, _ := os.ReadFile(filepath.Join(ctl, s))
				want, _ := maint.ReadFile("maint/" + s)
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from maint/%s", s, s)
				}
				if out, err := exec.Command("sh", "-n", filepath.Join(ctl, s)).CombinedOutput(); err != nil {
					t.Errorf("sh -n %s: %v\n%s", s, err, out)
				}
			}
		})
	}
	t.Run("lintian", func(t *testing.T) { lintian(t, debs) })
	t.Run("install", func(t *testing.T) { installRemove(t, debs[2]) })
}

// installRemove installs, upgrades, removes and purges the amd64 package
// with the real dpkg and maintainer scripts, inside a private mount
// namespace whose root is an overlay of this machine's: nothing reaches
// the real root.
func installRemove(t *testing.T, deb string) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("the amd64 package cannot be installed on %s", runtime.GOARCH)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace and chroot")
	}
	for _, tool := range []string{"dpkg", "unshare", "chroot", "useradd", "deb-systemd-helper"} {
		testkit.NeedTool(t, tool, "dpkg util-linux coreutils passwd init-system-helpers")
	}
	dir := t.TempDir()
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script, err := filepath.Abs("testdata/install-remove.sh")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	setup := fmt.Sprintf(`set -e
mount -t overlay overlay -o lowerdir=/,upperdir=%[1]s/upper,workdir=%[1]s/work %[2]s || exit 99
mount --bind /dev %[2]s/dev
mount -t proc proc %[2]s/proc
mount -t tmpfs tmpfs %[2]s/run
exec chroot %[2]s sh %[3]s %[4]s`, dir, root, script, deb)
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", setup).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 99 {
		t.Skipf("cannot mount an overlay of / here:\n%s", out)
	}
	if err != nil || !strings.Contains(string(out), "== ok") {
		t.Fatalf("install/remove in an overlay root: %v\n%s", err, out)
	}
	t.Logf("dpkg install, upgrade, remove, purge in an overlay root:\n%s", out)
}

// lintian runs Debian's package checker on the packages and fails on any
// error (E:) tag; warnings are logged.
func lintian(t *testing.T, debs []string) {
	l := testkit.NeedTool(t, "lintian", "lintian")
	out, _ := exec.Command(l, append([]string{"--tag-display-limit", "0"}, debs...)...).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "E: "):
			t.Errorf("lintian: %s", line)
		case strings.HasPrefix(line, "W: "):
			t.Logf("lintian: %s", line)
		}
	}
}

// TestPostinst runs the real postinst against stand-ins for the account
// and systemd tools (we cannot create users on the test machine), and
// checks it creates the groups and the user and enables the unit.
func TestPostinst(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	fake := `#!/bin/sh
echo "$(basename "$0") $*" >> ` + log + `
case "$(basename "$0")" in getent) exit 2;; esac
exit 0
`
	for _, n := range []string{"getent", "groupadd", "useradd", "usermod", "deb-systemd-helper", "systemctl", "chown", "chmod"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", "maint/postinst", "configure", "")
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postinst: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(log)
	for _, want := range []string{
		"groupadd --system i2c\n", "groupadd --system gpio\n",
		"useradd --system --user-group --home-dir /var/lib/edge-agent",
		"usermod --append --groups i2c,gpio edge-agent\n",
		"deb-systemd-helper enable edge-agent.service\n",
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("postinst did not run %q; calls:\n%s", want, got)
		}
	}
}
