package release

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"golang.org/x/mod/semver"
)

// Arch names, one per binary of a release.
const (
	ArchARMv6 = "armv6" // Raspberry Pi Zero and 1 (GOARCH=arm GOARM=6)
	ArchARMv7 = "armv7" // 32-bit Raspberry Pi OS on Pi 2 to 5 (GOARM=7)
	ArchARM64 = "arm64" // 64-bit Raspberry Pi OS
	ArchAMD64 = "amd64" // PCs, virtual machines, the e2e runs
)

// Archs lists the architectures a release is built for.
var Archs = [...]string{ArchARMv6, ArchARMv7, ArchARM64, ArchAMD64}

// ValidArch reports whether a is one of Archs.
func ValidArch(a string) bool {
	for _, x := range Archs {
		if a == x {
			return true
		}
	}
	return false
}

// RunningArch is the arch name of the running binary: runtime.GOARCH, and
// for arm the GOARM it was built with (from its build info). An arm build
// whose GOARM is unknown counts as armv6, which runs on every Pi; an arch
// no release is built for is returned as GOARCH (Decide then refuses with
// ErrNoArch).
func RunningArch() string {
	goarm := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" {
				goarm = s.Value
			}
		}
	}
	return archOf(runtime.GOARCH, goarm)
}

func archOf(goarch, goarm string) string {
	if goarch != "arm" {
		return goarch
	}
	// GOARM may carry a float option: "7,hardfloat".
	v, _, _ := strings.Cut(goarm, ",")
	switch v {
	case "7":
		return ArchARMv7
	case "6", "":
		return ArchARMv6
	default:
		return "armv" + v
	}
}

// ValidVersion returns nil if v is a release version: semver
// MAJOR.MINOR.PATCH with an optional leading "v", pre-release and build
// metadata ("1.6.0", "v1.6.0-rc.1"). Anything else wraps ErrNotRelease.
func ValidVersion(v string) error {
	_, err := canonical(v)
	return err
}

// CompareVersions compares two release versions by semver precedence
// (a pre-release sorts before its release; build metadata is ignored):
// -1 if a < b, 0 if equal, +1 if a > b. An error wraps ErrNotRelease.
func CompareVersions(a, b string) (int, error) {
	ca, err := canonical(a)
	if err != nil {
		return 0, err
	}
	cb, err := canonical(b)
	if err != nil {
		return 0, err
	}
	return semver.Compare(ca, cb), nil
}

// canonical returns v with a leading "v", as x/mod/semver wants it, and
// refuses the shorthands semver.IsValid accepts ("v1", "v1.2").
func canonical(v string) (string, error) {
	w := v
	if !strings.HasPrefix(w, "v") {
		w = "v" + w
	}
	core := w[1:]
	if i := strings.IndexAny(core, "-+"); i >= 0 {
		core = core[:i]
	}
	if !semver.IsValid(w) || strings.Count(core, ".") != 2 {
		return "", fmt.Errorf("%w: version %q is not MAJOR.MINOR.PATCH", ErrNotRelease, v)
	}
	return w, nil
}
