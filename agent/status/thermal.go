package status

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// CPUTemp reads the CPU temperature in degrees Celsius from the kernel's
// thermal zones under sysfsRoot (class/thermal/thermal_zone*/temp, in
// millidegrees). It prefers a zone whose type names the CPU (a Pi's
// "cpu-thermal", a PC's "x86_pkg_temp") and otherwise takes the first
// zone that reads. A zone that fails to read or reads outside -40..150 °C
// (the kernel's way of saying "invalid") is skipped. It returns nil and no
// error on a machine without thermal zones, and an error naming the file
// when every zone is unreadable.
func CPUTemp(sysfsRoot string) (*float64, error) {
	zones, err := filepath.Glob(filepath.Join(sysfsRoot, "class", "thermal", "thermal_zone*"))
	if err != nil || len(zones) == 0 {
		return nil, err
	}
	slices.SortFunc(zones, func(a, b string) int { return zoneNum(a) - zoneNum(b) })
	var first error
	var fallback *float64
	for _, z := range zones {
		t, err := zoneTemp(z)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		if isCPUZone(z) {
			return &t, nil
		}
		if fallback == nil {
			fallback = &t
		}
	}
	if fallback != nil {
		return fallback, nil
	}
	return nil, first
}

func zoneNum(path string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(path), "thermal_zone"))
	return n
}

func isCPUZone(zone string) bool {
	b, err := os.ReadFile(filepath.Join(zone, "type"))
	if err != nil {
		return false
	}
	t := strings.ToLower(strings.TrimSpace(string(b)))
	return strings.Contains(t, "cpu") || t == "x86_pkg_temp" || t == "soc_thermal"
}

// errNoReading marks a zone whose temp file is absent.
var errNoReading = errors.New("no temp file")

func zoneTemp(zone string) (float64, error) {
	path := filepath.Join(zone, "temp")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", path, errNoReading)
	}
	if err != nil {
		return 0, err // the kernel answers EINVAL or ENODATA for a sensor it cannot read
	}
	s := strings.TrimSpace(string(b))
	milli, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a temperature in millidegrees", path, s)
	}
	c := float64(milli) / 1000
	if c < -40 || c > 150 {
		return 0, fmt.Errorf("%s: %q is outside -40..150 °C", path, s)
	}
	return c, nil
}
