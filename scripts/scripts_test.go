package scripts

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// fakeDist writes one distinguishable stand-in binary per architecture.
func fakeDist(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, a := range []string{"armv6", "armv7", "arm64", "amd64"} {
		write(t, filepath.Join(dir, "edge-agent_linux_"+a), "binary for "+a+"\n", 0o755)
	}
	return dir
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fakeTools puts stand-ins for ssh, scp and the remote system tools in a
// directory: ssh runs the command locally with /tmp moved under remote/
// (mktemp -d makes the directory there), scp copies into remote/, the account and systemd tools log
// their arguments. getent reports nothing exists.
func fakeTools(t *testing.T, dir string) {
	t.Helper()
	write(t, filepath.Join(dir, "ssh"), `#!/bin/sh
shift
echo "ssh $*" >> "$LOG"
if [ "$*" = "uname -m" ]; then echo "$FAKE_UNAME"; exit 0; fi
if [ "$*" = "mktemp -d" ]; then d=$(TMPDIR="$REMOTE/tmp" mktemp -d); echo "${d#"$REMOTE"}"; exit 0; fi
cmd=$(echo "$*" | sed "s# /tmp/# $REMOTE/tmp/#g; s#^sudo ##")
exec sh -c "$cmd"
`, 0o755)
	write(t, filepath.Join(dir, "scp"), `#!/bin/sh
echo "scp $*" >> "$LOG"
for last; do :; done
dest="$REMOTE${last#*:}"
while [ $# -gt 1 ]; do cp "$1" "$dest"; shift; done
`, 0o755)
	logger := "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> \"$LOG\"\n"
	for _, n := range []string{"groupadd", "useradd", "usermod", "systemctl", "modprobe"} {
		write(t, filepath.Join(dir, n), logger, 0o755)
	}
	write(t, filepath.Join(dir, "getent"), logger+"exit 2\n", 0o755)
}

func TestInstallPi(t *testing.T) {
	dist := fakeDist(t)
	for _, tc := range []struct{ uname, arch string }{
		{"armv6l", "armv6"}, {"armv7l", "armv7"}, {"aarch64", "arm64"}, {"x86_64", "amd64"},
	} {
		t.Run(tc.uname, func(t *testing.T) {
			dir := t.TempDir()
			tools, remote, log := filepath.Join(dir, "bin"), filepath.Join(dir, "remote"), filepath.Join(dir, "log")
			fakeTools(t, tools)
			if err := os.MkdirAll(filepath.Join(remote, "tmp"), 0o755); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(remote, "root")
			env := []string{
				"PATH=" + tools + ":" + os.Getenv("PATH"), "LOG=" + log, "REMOTE=" + remote, "ROOT=" + root,
				"FAKE_UNAME=" + tc.uname, "DIST=" + dist,
			}
			install := func() string {
				cmd := exec.Command("./install-pi.sh", "pi@raspberrypi.local")
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("install-pi.sh: %v\n%s", err, out)
				}
				return string(out)
			}
			out := install()
			if got, want := read(t, filepath.Join(root, "usr/local/bin/edge-agent")), "binary for "+tc.arch+"\n"; got != want {
				t.Fatalf("installed %q, want %q", got, want)
			}
			if fi, _ := os.Stat(filepath.Join(root, "usr/local/bin/edge-agent")); fi.Mode().Perm() != 0o755 {
				t.Errorf("binary mode %v", fi.Mode())
			}
			unit := read(t, filepath.Join(root, "etc/systemd/system/edge-agent.service"))
			if !strings.Contains(unit, "\nExecStart=/usr/local/bin/edge-agent run --config /etc/edge-agent/config.yaml\n") {
				t.Errorf("unit ExecStart not pointed at /usr/local/bin:\n%s", unit)
			}
			guard := read(t, filepath.Join(root, "etc/systemd/system/edge-agent-update-guard.service"))
			if !strings.Contains(guard, "\nExecStart=/usr/local/bin/edge-agent update guard") {
				t.Errorf("guard unit ExecStart not pointed at /usr/local/bin:\n%s", guard)
			}
			if read(t, filepath.Join(root, "etc/systemd/system/edge-agent-update-guard.timer")) != read(t, "../systemd/edge-agent-update-guard.timer") {
				t.Error("the guard's timer is not the shipped one")
			}
			if read(t, filepath.Join(root, "etc/edge-agent/config.yaml")) != read(t, "../systemd/edge-agent.config.yaml") {
				t.Error("config.yaml is not the default config")
			}
			if !strings.Contains(read(t, filepath.Join(root, "etc/modules-load.d/edge-agent.conf")), "\ni2c-dev\n") {
				t.Error("modules-load.d/edge-agent.conf does not load i2c-dev")
			}
			calls := read(t, log)
			// Staged in a fresh mktemp -d directory, not a fixed /tmp path
			// another user could plant (issue 11 item 14), and cleaned up.
			if !strings.Contains(calls, "ssh mktemp -d\n") || strings.Contains(calls, "/tmp/edge-agent-install") {
				t.Errorf("not staged in a mktemp -d directory:\n%s", calls)
			}
			if left, _ := os.ReadDir(filepath.Join(remote, "tmp")); len(left) != 0 {
				t.Errorf("staging directory left behind: %v", left)
			}
			for _, want := range []string{
				"ssh uname -m\n", "groupadd --system i2c\n", "groupadd --system gpio\n",
				"useradd --system --user-group", "usermod --append --groups i2c,gpio edge-agent\n",
				"systemctl daemon-reload\n", "systemctl enable edge-agent.service\n", "modprobe i2c-dev\n",
				"systemctl enable --now edge-agent-update-guard.timer\n",
			} {
				if !strings.Contains(calls, want) {
					t.Errorf("no %q in calls:\n%s", want, calls)
				}
			}
			if strings.Contains(calls, "systemctl restart") || !strings.Contains(out, "not started yet") {
				t.Errorf("started the agent with the placeholder broker URL; calls:\n%s\noutput:\n%s", calls, out)
			}
			if !strings.Contains(out, "installing edge-agent_linux_"+tc.arch) {
				t.Errorf("output does not name the binary:\n%s", out)
			}
			// A second install keeps an edited config, and starts the agent.
			edited := "# edited\nmqtt: {url: ssl://abc.s1.eu.hivemq.cloud:8883}\n"
			write(t, filepath.Join(root, "etc/edge-agent/config.yaml"), edited, 0o644)
			if out := install(); !strings.Contains(out, "keeping the existing") {
				t.Errorf("second install did not say it kept the config:\n%s", out)
			}
			if read(t, filepath.Join(root, "etc/edge-agent/config.yaml")) != edited {
				t.Error("second install overwrote the config")
			}
			calls = read(t, log)
			for _, want := range []string{"systemctl restart edge-agent.service\n", "systemctl --no-pager --lines=20 status edge-agent.service\n"} {
				if !strings.Contains(calls, want) {
					t.Errorf("second install: no %q in calls:\n%s", want, calls)
				}
			}
		})
	}
	t.Run("confirm keys", func(t *testing.T) {
		dir := t.TempDir()
		tools, remote, log := filepath.Join(dir, "bin"), filepath.Join(dir, "remote"), filepath.Join(dir, "log")
		fakeTools(t, tools)
		if err := os.MkdirAll(filepath.Join(remote, "tmp"), 0o755); err != nil {
			t.Fatal(err)
		}
		root := filepath.Join(remote, "root")
		key := pki.NewConfirmKey(t)
		install := func(keys string) (string, error) {
			cmd := exec.Command("./install-pi.sh", "pi@raspberrypi.local")
			cmd.Env = []string{"PATH=" + tools + ":" + os.Getenv("PATH"), "LOG=" + log, "REMOTE=" + remote, "ROOT=" + root,
				"FAKE_UNAME=aarch64", "DIST=" + dist, "CONFIRM_KEYS=" + keys}
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		// A private key is refused before anything is touched.
		out, err := install(key.KeyFile)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out, "holds a private key") {
			t.Fatalf("CONFIRM_KEYS=private key: %v\n%s", err, out)
		}
		if _, err := os.Stat(log); err == nil {
			t.Fatalf("install-pi.sh reached the Pi with a private key:\n%s", read(t, log))
		}
		// The default config with the real broker: without keys it is not started.
		if out, err := install(""); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		conf := strings.Replace(read(t, "../systemd/edge-agent.config.yaml"), "YOUR-CLUSTER", "abc", 1)
		write(t, filepath.Join(root, "etc/edge-agent/config.yaml"), conf, 0o644)
		out, err = install("")
		if err != nil || !strings.Contains(out, "confirm-keys.pem, which is missing") || strings.Contains(read(t, log), "systemctl restart") {
			t.Fatalf("no keys: %v, calls:\n%s\noutput:\n%s", err, read(t, log), out)
		}
		// With the public key: placed, then started.
		out, err = install(key.PubFile)
		if err != nil || !strings.Contains(out, "wrote /etc/edge-agent/confirm-keys.pem") {
			t.Fatalf("with keys: %v\n%s", err, out)
		}
		if read(t, filepath.Join(root, "etc/edge-agent/confirm-keys.pem")) != read(t, key.PubFile) {
			t.Error("confirm-keys.pem is not the given public key")
		}
		if !strings.Contains(read(t, log), "systemctl restart edge-agent.service\n") {
			t.Errorf("not started with its keys:\n%s", read(t, log))
		}
	})
	t.Run("unsupported", func(t *testing.T) {
		dir := t.TempDir()
		fakeTools(t, filepath.Join(dir, "bin"))
		cmd := exec.Command("./install-pi.sh", "pi@host")
		cmd.Env = []string{"PATH=" + filepath.Join(dir, "bin") + ":" + os.Getenv("PATH"),
			"LOG=" + filepath.Join(dir, "log"), "FAKE_UNAME=mips", "DIST=" + dist}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "unsupported architecture mips") {
			t.Fatalf("want a failure naming mips, got %v:\n%s", err, out)
		}
	})
}

// snapshot describes a tree: every path with its mode, size, mtime and
// content hash (or link target), so two snapshots are equal only when
// nothing was touched.
func snapshot(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v %d", rel, fi.Mode(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

const piConfigTxt = `# Raspberry Pi OS Bookworm config.txt (abridged)
dtparam=audio=on
camera_auto_detect=1
[cm4]
otg_mode=1
[all]
arm_boost=1`

func TestFlashSD(t *testing.T) {
	dist := fakeDist(t)
	for _, tc := range []struct {
		name, arch string
		aarch64    bool
	}{
		{"32-bit", "armv6", false},
		{"64-bit, with confirm keys", "arm64", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "rootfs")
			boot := filepath.Join(dir, "bootfs")
			write(t, filepath.Join(root, "etc/hostname"), "raspberrypi\n", 0o644)
			write(t, filepath.Join(root, "usr/lib/os-release"), "ID=debian\n", 0o644)
			if tc.aarch64 {
				write(t, filepath.Join(root, "usr/lib/ld-linux-aarch64.so.1"), "", 0o755)
			}
			write(t, filepath.Join(boot, "config.txt"), piConfigTxt, 0o755)
			var keys *pki.ConfirmKey
			if tc.aarch64 {
				keys = pki.NewConfirmKey(t)
			}
			flash := func() string {
				cmd := exec.Command("./flash-sd.sh", root, boot)
				cmd.Env = append(os.Environ(), "DIST="+dist)
				if keys != nil {
					cmd.Env = append(cmd.Env, "CONFIRM_KEYS="+keys.PubFile)
				}
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("flash-sd.sh: %v\n%s", err, out)
				}
				return string(out)
			}
			out := flash()
			if keys != nil && read(t, filepath.Join(root, "etc/edge-agent/confirm-keys.pem")) != read(t, keys.PubFile) {
				t.Error("confirm-keys.pem is not the given public key")
			}
			if keys == nil && !strings.Contains(out, "confirm-keys.pem, which is missing") {
				t.Errorf("no word about the missing keys:\n%s", out)
			}
			first := append(snapshot(t, root), snapshot(t, boot)...)
			flash()
			second := append(snapshot(t, root), snapshot(t, boot)...)
			if strings.Join(first, "\n") != strings.Join(second, "\n") {
				t.Fatalf("second run changed the tree:\nfirst:\n%s\nsecond:\n%s",
					strings.Join(first, "\n"), strings.Join(second, "\n"))
			}
			if got := read(t, filepath.Join(root, "usr/local/bin/edge-agent")); got != "binary for "+tc.arch+"\n" {
				t.Errorf("installed %q, want the %s binary", got, tc.arch)
			}
			unit := read(t, filepath.Join(root, "etc/systemd/system/edge-agent.service"))
			if !strings.Contains(unit, "\nExecStart=/usr/local/bin/edge-agent run") {
				t.Error("unit ExecStart not pointed at /usr/local/bin")
			}
			for link, target := range map[string]string{
				"etc/systemd/system/multi-user.target.wants/edge-agent.service":              "/etc/systemd/system/edge-agent.service",
				"etc/systemd/system/edge-agent.service.requires/edge-agent-sysusers.service": "/etc/systemd/system/edge-agent-sysusers.service",
				"etc/systemd/system/timers.target.wants/edge-agent-update-guard.timer":       "/etc/systemd/system/edge-agent-update-guard.timer",
			} {
				if got, err := os.Readlink(filepath.Join(root, link)); err != nil || got != target {
					t.Errorf("%s -> %q (%v), want %s", link, got, err, target)
				}
			}
			sysusers := read(t, filepath.Join(root, "usr/lib/sysusers.d/edge-agent.conf"))
			for _, want := range []string{"\nu edge-agent ", "\nm edge-agent i2c\n", "\nm edge-agent gpio\n"} {
				if !strings.Contains(sysusers, want) {
					t.Errorf("sysusers.d lacks %q", want)
				}
			}
			if read(t, filepath.Join(root, "etc/edge-agent/config.yaml")) != read(t, "../systemd/edge-agent.config.yaml") {
				t.Error("config.yaml is not the default config")
			}
			cfg := read(t, filepath.Join(boot, "config.txt"))
			if !strings.HasPrefix(cfg, piConfigTxt+"\n") {
				t.Errorf("config.txt's original content changed:\n%s", cfg)
			}
			lines := strings.Split(cfg, "\n")
			count := map[string]int{}
			for _, l := range lines {
				count[l]++
			}
			for _, want := range []string{"dtparam=i2c_arm=on", "dtoverlay=dht11,gpiopin=4", "dtoverlay=w1-gpio,gpiopin=17"} {
				if count[want] != 1 {
					t.Errorf("config.txt has %q %d times, want once:\n%s", want, count[want], cfg)
				}
			}
			if lines[len(lines)-5] != "[all]" {
				t.Errorf("the added lines are not under [all]:\n%s", cfg)
			}
		})
	}
}

// TestFlashSDUnits checks the units flash-sd.sh writes with systemd-analyze,
// the way systemd on the Pi will read them.
func TestFlashSDUnits(t *testing.T) {
	analyze := testkit.NeedTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	write(t, filepath.Join(root, "etc/hostname"), "raspberrypi\n", 0o644)
	write(t, filepath.Join(dir, "boot/config.txt"), "", 0o644)
	cmd := exec.Command("./flash-sd.sh", root, filepath.Join(dir, "boot"))
	cmd.Env = append(os.Environ(), "DIST="+fakeDist(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("flash-sd.sh: %v\n%s", err, out)
	}
	// verify needs the ExecStart binaries to exist on this machine.
	units := filepath.Join(dir, "units")
	for _, u := range []string{"edge-agent.service", "edge-agent-sysusers.service", "edge-agent-update-guard.service", "edge-agent-update-guard.timer"} {
		s := read(t, filepath.Join(root, "etc/systemd/system", u))
		s = strings.ReplaceAll(s, "/usr/local/bin/edge-agent", filepath.Join(root, "usr/local/bin/edge-agent"))
		s = strings.ReplaceAll(s, "/usr/bin/systemd-sysusers", "/bin/true")
		write(t, filepath.Join(units, u), s, 0o644)
	}
	out, err := exec.Command(analyze, "verify", filepath.Join(units, "edge-agent-sysusers.service"),
		filepath.Join(units, "edge-agent.service"), filepath.Join(units, "edge-agent-update-guard.timer"),
		filepath.Join(units, "edge-agent-update-guard.service")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestFlashSDBootDefault: without BOOT, a Bookworm card's config.txt under
// ROOTFS/boot/firmware is used; with none anywhere the script refuses.
func TestFlashSDBootDefault(t *testing.T) {
	dist := fakeDist(t)
	root := filepath.Join(t.TempDir(), "rootfs")
	write(t, filepath.Join(root, "etc/hostname"), "raspberrypi\n", 0o644)
	run := func() (string, error) {
		cmd := exec.Command("./flash-sd.sh", root)
		cmd.Env = append(os.Environ(), "DIST="+dist)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(); err == nil || !strings.Contains(out, "pass the boot partition") {
		t.Fatalf("no config.txt: want a refusal naming BOOT, got %v:\n%s", err, out)
	}
	write(t, filepath.Join(root, "boot/firmware/config.txt"), "[all]\n", 0o644)
	if out, err := run(); err != nil {
		t.Fatalf("flash-sd.sh ROOTFS: %v\n%s", err, out)
	}
	if cfg := read(t, filepath.Join(root, "boot/firmware/config.txt")); !strings.Contains(cfg, "\ndtparam=i2c_arm=on\n") {
		t.Fatalf("boot/firmware/config.txt not updated:\n%s", cfg)
	}
}

// TestInstallDocKeepsPasswordOutOfHistory: docs/INSTALL.md must not have
// the user type the MQTT password into a command (shell history, ps), and
// must create the file with its final mode (issue 11 item 14).
func TestInstallDocKeepsPasswordOutOfHistory(t *testing.T) {
	doc := read(t, "../docs/INSTALL.md")
	for _, l := range strings.Split(doc, "\n") {
		if strings.Contains(l, "mqtt-password") && (strings.Contains(l, "echo ") || strings.Contains(l, "printf ")) {
			t.Errorf("docs/INSTALL.md puts the password on a command line: %s", l)
		}
	}
	if !strings.Contains(doc, "install -m 0640 -o root -g edge-agent /dev/null /etc/edge-agent/mqtt-password") {
		t.Error("docs/INSTALL.md does not create the password file 0640 root:edge-agent before it holds the password")
	}
}
