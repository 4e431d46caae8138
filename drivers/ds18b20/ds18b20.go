// Package ds18b20 reads a Maxim DS18B20 temperature sensor through the
// Linux w1 sysfs (dtoverlay=w1-gpio): {sysfs}/bus/w1/devices/28-*/. It
// prefers the `temperature` file newer kernels provide, else parses
// w1_slave, requires the kernel's "crc=.. YES", and rejects the 85 °C
// power-on value and values outside -55..125 °C.
//
//	s := ds18b20.New("ds18b20-1", ds18b20.Opts{SysfsRoot: "/sys", ID: "auto"})
//	v, err := s.Read(ctx) // temperature_c
//
// The kernel does the 1-Wire timing and conversion (up to 750 ms at 12
// bits, spent inside the file read); this package does not talk to GPIO.
package ds18b20

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// Opts configures a DS18B20.
type Opts struct {
	SysfsRoot string // "" means /sys
	// ID is "auto" (or "") for the first 28-* device in sorted order, or
	// the device's id like "28-0316a2793aff".
	ID     string
	Logger *slog.Logger // nil discards
}

// Sensor is one DS18B20.
type Sensor struct {
	name string
	opts Opts
	dir  string // resolved device directory, "" until found
}

// New returns a sensor; the device is looked up on the first Read, so a
// bus that enumerates late does not stop the agent from starting.
func New(name string, opts Opts) *Sensor {
	if opts.SysfsRoot == "" {
		opts.SysfsRoot = "/sys"
	}
	if opts.ID == "" {
		opts.ID = "auto"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sensor{name: name, opts: opts}
}

// Name returns the configured name.
func (s *Sensor) Name() string { return s.name }

// Kind returns "ds18b20".
func (s *Sensor) Kind() string { return "ds18b20" }

// Read returns temperature_c.
func (s *Sensor) Read(ctx context.Context) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := s.read()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			s.dir = "" // unplugged or renumbered: look again next time
			err = fault.Mark(fault.Absent, err)
		}
		return nil, fmt.Errorf("ds18b20 %s: %w", s.name, err)
	}
	return map[string]float64{reading.Temperature: t}, nil
}

func (s *Sensor) read() (float64, error) {
	dir, err := s.device()
	if err != nil {
		return 0, err
	}
	var milli int64
	if b, err := os.ReadFile(filepath.Join(dir, "temperature")); err == nil {
		milli, err = parseTemperature(filepath.Join(dir, "temperature"), b)
		if err != nil {
			return 0, err
		}
	} else if errors.Is(err, os.ErrNotExist) {
		p := filepath.Join(dir, "w1_slave")
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		if milli, err = ParseW1Slave(b); err != nil {
			return 0, fmt.Errorf("%s: %w", p, err)
		}
	} else {
		return 0, err
	}
	return check(milli)
}

// parseTemperature reads the newer kernels' temperature file: millidegrees.
// The kernel returns it empty when its CRC check failed.
func parseTemperature(path string, b []byte) (int64, error) {
	text := bytes.TrimSpace(b)
	if len(text) == 0 {
		return 0, fmt.Errorf("%s: empty: %w", path, ErrCRC)
	}
	v, err := strconv.ParseInt(string(text), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s: %w: %q", path, ErrParse, clip(text))
	}
	return v, nil
}

// ParseW1Slave parses the w1_slave file the kernel's w1_therm driver writes:
//
//	72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//	72 01 4b 46 7f ff 0e 10 57 t=23125
//
// and returns the temperature in millidegrees, or an error if the CRC line
// does not end in YES, the scratchpad is all zeros, or the text is not in
// this form.
func ParseW1Slave(b []byte) (int64, error) {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) != 2 {
		return 0, fmt.Errorf("%w: want 2 lines, got %q", ErrParse, clip(bytes.TrimSpace(b)))
	}
	crcLine := bytes.TrimSpace(lines[0])
	if !bytes.Contains(crcLine, []byte("crc=")) {
		return 0, fmt.Errorf("%w: no crc= in %q", ErrParse, clip(crcLine))
	}
	if !bytes.HasSuffix(crcLine, []byte(" YES")) {
		return 0, fmt.Errorf("%w: %q", ErrCRC, clip(crcLine))
	}
	// Nine zero bytes have a CRC of zero, so the kernel says YES; it means
	// the data line is held low.
	if bytes.HasPrefix(crcLine, []byte("00 00 00 00 00 00 00 00 00 ")) {
		return 0, fmt.Errorf("%w: scratchpad all zeros (data line shorted to GND?)", ErrOutOfRange)
	}
	_, t, ok := bytes.Cut(lines[1], []byte("t="))
	if !ok {
		return 0, fmt.Errorf("%w: no t= in %q", ErrParse, clip(lines[1]))
	}
	v, err := strconv.ParseInt(string(bytes.TrimSpace(t)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrParse, clip(lines[1]))
	}
	return v, nil
}

func check(milli int64) (float64, error) {
	if milli == 85000 {
		return 0, ErrPowerOn
	}
	if milli < -55000 || milli > 125000 {
		return 0, fmt.Errorf("%w: %.3f °C outside -55..125", ErrOutOfRange, float64(milli)/1000)
	}
	return float64(milli) / 1000, nil
}

func (s *Sensor) device() (string, error) {
	if s.dir != "" {
		return s.dir, nil
	}
	base := filepath.Join(s.opts.SysfsRoot, "bus", "w1", "devices")
	if s.opts.ID != "auto" {
		dir := filepath.Join(base, s.opts.ID)
		if _, err := os.Stat(dir); err != nil {
			return "", fmt.Errorf("%w: %s not found (ids present: %v)", ErrNoDevice, s.opts.ID, ids(base))
		}
		s.dir = dir
		return dir, nil
	}
	found, err := Find(s.opts.SysfsRoot)
	if err != nil {
		return "", err
	}
	if len(found) > 1 {
		s.opts.Logger.Warn("several DS18B20 on the bus, using the first; set w1_id to choose",
			"sensor", s.name, "ids", found)
	}
	s.dir = filepath.Join(base, found[0])
	return s.dir, nil
}

// Find returns the ids of the DS18B20s (family 28) under sysfsRoot, sorted,
// or an error wrapping ErrNoDevice.
func Find(sysfsRoot string) ([]string, error) {
	base := filepath.Join(sysfsRoot, "bus", "w1", "devices")
	found := ids(base)
	if len(found) == 0 {
		return nil, fmt.Errorf("%w: no 28-* under %s (dtoverlay=w1-gpio in config.txt, 4.7k pull-up on the data line)", ErrNoDevice, base)
	}
	return found, nil
}

func ids(base string) []string {
	paths, _ := filepath.Glob(filepath.Join(base, "28-*"))
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = filepath.Base(p)
	}
	sort.Strings(out)
	return out
}

func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// Close does nothing: the files are opened per read.
func (s *Sensor) Close() error { return nil }
