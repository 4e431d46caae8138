// Package dht reads DHT11 and DHT22/AM2302 temperature and humidity
// sensors through the Linux IIO dht11 driver (dtoverlay=dht11,gpiopin=N),
// which exposes in_temp_input (m°C) and in_humidityrelative_input (m%RH)
// under {sysfs}/bus/iio/devices/iio:deviceN. The kernel does the timing
// and checksum; this package picks the device, retries the EIO/ETIMEDOUT
// the kernel returns when a frame is lost (waiting the sensor's minimum
// interval), counts failures and rejects values outside the datasheet.
//
//	s, err := dht.New("dht22-gpio4", dht.Opts{Model: dht.DHT22, SysfsRoot: "/sys"})
//	v, err := s.Read(ctx) // temperature_c, humidity_pct
//
// It does not bit-bang GPIO itself.
package dht

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// FileReader reads one sysfs file; os.ReadFile in production. Tests wrap
// it to return the EIO/ETIMEDOUT a real sensor produces.
type FileReader interface {
	ReadFile(name string) ([]byte, error)
}

// Clock is time for the retry logic; tests pass a fake one so they are fast.
type Clock interface {
	Now() time.Time
	// Sleep waits d or until ctx is done, returning ctx.Err() then.
	Sleep(ctx context.Context, d time.Duration) error
}

// Opts configures a DHT sensor.
type Opts struct {
	Model     Model  // DHT11 or DHT22
	SysfsRoot string // "" means /sys
	// Device is "auto" (or "") for the first IIO device named dht11, or
	// "iio:deviceN".
	Device string
	// Retries is how many more attempts follow an EIO/ETIMEDOUT; 0 means
	// DefaultRetries. Each waits the model's MinInterval.
	Retries int
	Files   FileReader   // nil means the real files
	Clock   Clock        // nil means the real clock
	Logger  *slog.Logger // nil discards
}

// DefaultRetries: a DHT on a busy Pi loses a frame now and then; three
// attempts (6 s for a DHT22) almost always get one through.
const DefaultRetries = 2

// Sensor is one DHT11/DHT22 behind the kernel's IIO driver.
type Sensor struct {
	name     string
	opts     Opts
	dir      string        // resolved device directory, "" until found
	last     time.Time     // start of the last measurement attempt
	failures atomic.Uint64 // failed attempts, including those a retry recovered from (tests read it)
}

// New returns a sensor; the device is looked up on the first Read, so an
// overlay that loads late does not stop the agent from starting.
func New(name string, opts Opts) (*Sensor, error) {
	if opts.Model != DHT11 && opts.Model != DHT22 {
		return nil, fmt.Errorf("dht %s: unknown model %d", name, int(opts.Model))
	}
	if opts.SysfsRoot == "" {
		opts.SysfsRoot = "/sys"
	}
	if opts.Device == "" {
		opts.Device = "auto"
	}
	if opts.Retries == 0 {
		opts.Retries = DefaultRetries
	}
	if opts.Files == nil {
		opts.Files = osFiles{}
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sensor{name: name, opts: opts}, nil
}

// Name returns the configured name.
func (s *Sensor) Name() string { return s.name }

// Kind returns "dht11" or "dht22".
func (s *Sensor) Kind() string { return s.opts.Model.String() }

// Read returns temperature_c and humidity_pct. An EIO or ETIMEDOUT from the
// kernel is retried up to Opts.Retries times, never sooner than the model's
// minimum interval after the previous attempt; other errors and
// out-of-range values are returned at once.
func (s *Sensor) Read(ctx context.Context) (map[string]float64, error) {
	for attempt := 0; ; attempt++ {
		t, rh, err := s.attempt(ctx)
		if err == nil {
			return map[string]float64{reading.Temperature: t, reading.Humidity: rh}, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		s.failures.Add(1)
		if !Retryable(err) || attempt >= s.opts.Retries {
			return nil, err
		}
		s.opts.Logger.Debug("dht read failed, retrying", "sensor", s.name, "attempt", attempt+1, "err", err)
	}
}

// Retryable reports whether err is one the kernel returns for a lost or
// corrupted frame (EIO, ETIMEDOUT), which the next measurement may not have.
func Retryable(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.ETIMEDOUT)
}

func (s *Sensor) attempt(ctx context.Context) (tempC, rh float64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	dir, err := s.device()
	if err != nil {
		return 0, 0, err
	}
	if !s.last.IsZero() {
		if wait := s.opts.Model.MinInterval() - s.opts.Clock.Now().Sub(s.last); wait > 0 {
			if err := s.opts.Clock.Sleep(ctx, wait); err != nil {
				return 0, 0, err
			}
		}
	}
	s.last = s.opts.Clock.Now()
	// Reading the temperature triggers the measurement; the kernel caches
	// the frame, so the humidity comes from the same one.
	tm, err := s.readMilli(filepath.Join(dir, "in_temp_input"))
	if err == nil {
		var hm float64
		if hm, err = s.readMilli(filepath.Join(dir, "in_humidityrelative_input")); err == nil {
			tempC, rh = tm/1000, hm/1000
			err = s.opts.Model.CheckRange(tempC, rh)
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		s.dir = "" // the overlay was unloaded or renumbered; look again next time
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s %s: %w", s.opts.Model, s.name, classify(err))
	}
	return tempC, rh, nil
}

// classify gives the kernel's errors their fault class: the dht11 IIO
// driver returns EIO for a frame it cannot use (checksum mismatch, lost
// synchronisation, undecodable) and ETIMEDOUT when too few edges came (the
// sensor did not answer: unplugged, unpowered, or a missed start signal).
// Errors of this package already have theirs.
func classify(err error) error {
	switch {
	case errors.Is(err, syscall.EIO):
		return fault.Mark(fault.CRC, err)
	case errors.Is(err, syscall.ETIMEDOUT):
		return fault.Mark(fault.Timeout, err)
	case errors.Is(err, os.ErrNotExist):
		return fault.Mark(fault.Absent, err)
	}
	return err
}

func (s *Sensor) readMilli(path string) (float64, error) {
	b, err := s.opts.Files.ReadFile(path)
	if err != nil {
		return 0, err // *PathError names the file and keeps the errno
	}
	text := strings.TrimSpace(string(b))
	v, err := strconv.ParseInt(text, 10, 32)
	if err != nil {
		if len(text) > 32 {
			text = text[:32] + "..."
		}
		return 0, fmt.Errorf("%s: %w: %q", path, ErrParse, text)
	}
	return float64(v), nil
}

func (s *Sensor) device() (string, error) {
	if s.dir != "" {
		return s.dir, nil
	}
	base := filepath.Join(s.opts.SysfsRoot, "bus", "iio", "devices")
	if s.opts.Device != "auto" {
		dir := filepath.Join(base, s.opts.Device)
		name, err := s.opts.Files.ReadFile(filepath.Join(dir, "name"))
		if err != nil {
			return "", fmt.Errorf("%s %s: %w: %w", s.opts.Model, s.name, ErrNoDevice, err)
		}
		if n := strings.TrimSpace(string(name)); n != "dht11" {
			return "", fmt.Errorf("%s %s: %w: %s is %q", s.opts.Model, s.name, ErrNoDevice, dir, n)
		}
		s.dir = dir
		return dir, nil
	}
	devs, err := Find(s.opts.SysfsRoot)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", s.opts.Model, s.name, err)
	}
	if len(devs) > 1 {
		s.opts.Logger.Warn("several dht11 IIO devices, using the first; set iio_device to choose",
			"sensor", s.name, "devices", devs)
	}
	s.dir = filepath.Join(base, devs[0])
	return s.dir, nil
}

// Find returns the IIO devices under sysfsRoot whose name is dht11, in
// numeric order ("iio:device0", ...), or an error wrapping ErrNoDevice.
func Find(sysfsRoot string) ([]string, error) {
	base := filepath.Join(sysfsRoot, "bus", "iio", "devices")
	entries, err := os.ReadDir(base)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", base, err)
	}
	var devs []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "iio:device") {
			continue
		}
		name, err := os.ReadFile(filepath.Join(base, e.Name(), "name"))
		if err == nil && strings.TrimSpace(string(name)) == "dht11" {
			devs = append(devs, e.Name())
		}
	}
	if len(devs) == 0 {
		return nil, fmt.Errorf("%w under %s (add dtoverlay=dht11,gpiopin=N to config.txt and reboot)", ErrNoDevice, base)
	}
	sort.Slice(devs, func(i, j int) bool { return devNum(devs[i]) < devNum(devs[j]) })
	return devs, nil
}

func devNum(name string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(name, "iio:device"))
	return n
}

// Close does nothing: the files are opened per read.
func (s *Sensor) Close() error { return nil }

type osFiles struct{}

func (osFiles) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
