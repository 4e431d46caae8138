package status

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

// Where the Raspberry Pi firmware's flags are, under the sysfs root. The
// firmware driver's get_throttled attribute (Raspberry Pi kernels since
// 4.14, deprecated but still present) prints the whole word in hex, as
// `vcgencmd get_throttled` does; mainline kernels only have the hwmon
// device "rpi_volt", whose in0_lcrit_alarm says whether the supply
// dropped below 4.63 V since the driver last polled (every 2 s).
var (
	getThrottledPath = filepath.Join("devices", "platform", "soc", "soc:firmware", "get_throttled")
	hwmonGlob        = filepath.Join("class", "hwmon", "hwmon*")
)

// The firmware's bits: 0-3 now, 16-19 at some time since boot.
var throttleBits = []struct {
	bit  uint
	flag string
}{
	{0, heartbeat.UnderVoltage},
	{1, heartbeat.FreqCapped},
	{2, heartbeat.Throttled},
	{3, heartbeat.SoftTempLimit},
}

// ReadThrottle reads the Raspberry Pi's under-voltage and throttling
// flags under sysfsRoot: from the firmware's get_throttled word when the
// kernel has it, else the under-voltage alarm of the rpi_volt hwmon device
// (now only). It returns nil and no error where neither exists (not a Pi),
// and an error naming the file for content it cannot parse.
func ReadThrottle(sysfsRoot string) (*heartbeat.Throttle, error) {
	path := filepath.Join(sysfsRoot, getThrottledPath)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		s := strings.TrimPrefix(strings.TrimSpace(string(b)), "0x")
		word, err := strconv.ParseUint(s, 16, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a hex word", path, strings.TrimSpace(string(b)))
		}
		return throttleOf(word), nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	return readRPiVolt(sysfsRoot)
}

func throttleOf(word uint64) *heartbeat.Throttle {
	t := &heartbeat.Throttle{}
	for _, b := range throttleBits {
		if word&(1<<b.bit) != 0 {
			t.Now = append(t.Now, b.flag)
		}
		if word&(1<<(b.bit+16)) != 0 {
			t.SinceBoot = append(t.SinceBoot, b.flag)
		}
	}
	return t
}

func readRPiVolt(sysfsRoot string) (*heartbeat.Throttle, error) {
	devs, err := filepath.Glob(filepath.Join(sysfsRoot, hwmonGlob))
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		name, err := os.ReadFile(filepath.Join(d, "name"))
		if err != nil || strings.TrimSpace(string(name)) != "rpi_volt" {
			continue
		}
		path := filepath.Join(d, "in0_lcrit_alarm")
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		switch s := strings.TrimSpace(string(b)); s {
		case "0":
			return &heartbeat.Throttle{}, nil
		case "1":
			return &heartbeat.Throttle{Now: []string{heartbeat.UnderVoltage}}, nil
		default:
			return nil, fmt.Errorf("%s: %q is not 0 or 1", path, s)
		}
	}
	return nil, nil
}
