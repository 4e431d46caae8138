package dht

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// fakeClock starts at a fixed time and moves only when slept on.
type fakeClock struct {
	now    time.Time
	sleeps []time.Duration
}

func newClock() *fakeClock { return &fakeClock{now: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

// flakyFiles reads the fixture tree but fails the first len(errs) reads of
// in_temp_input with errs[i], the way the kernel's dht11 driver fails a
// read when a frame is lost (ETIMEDOUT) or garbled (EIO).
type flakyFiles struct {
	errs  []error
	reads int
}

func (f *flakyFiles) ReadFile(name string) ([]byte, error) {
	if filepath.Base(name) == "in_temp_input" {
		f.reads++
		if f.reads <= len(f.errs) {
			return nil, &os.PathError{Op: "read", Path: name, Err: f.errs[f.reads-1]}
		}
	}
	return os.ReadFile(name)
}

func TestRead(t *testing.T) {
	tests := []struct {
		name     string
		root     string
		model    Model
		device   string
		want     map[string]float64
		wantErr  error
		msg      string
		failures uint64
		class    fault.Class // of the error, for the agent's health
	}{
		{"good auto", "good", DHT22, "auto", map[string]float64{"temperature_c": 23.4, "humidity_pct": 48.2}, nil, "", 0, ""},
		{"good named", "good", DHT11, "iio:device1", map[string]float64{"temperature_c": 23.4, "humidity_pct": 48.2}, nil, "", 0, ""},
		{"lowest number of two", "two", DHT22, "", map[string]float64{"temperature_c": 21, "humidity_pct": 40}, nil, "", 0, ""},
		{"dht22 below zero", "cold", DHT22, "auto", map[string]float64{"temperature_c": -10.1, "humidity_pct": 65.2}, nil, "", 0, ""},
		{"dht11 below zero", "cold", DHT11, "auto", nil, ErrOutOfRange, "temperature -10.1 °C outside 0..50", 1, fault.OutOfRange},
		{"dht22 too hot", "hot", DHT22, "auto", nil, ErrOutOfRange, "temperature 95.0 °C outside -40..80", 1, fault.OutOfRange},
		{"garbage", "garbage", DHT22, "auto", nil, ErrParse, `in_temp_input: unparsable value: "hello world"`, 1, fault.Other},
		{"no dht device", "missing", DHT22, "auto", nil, ErrNoDevice, "dtoverlay=dht11", 1, fault.Absent},
		{"named device is something else", "good", DHT22, "iio:device0", nil, ErrNoDevice, `is "ads1015"`, 1, fault.Absent},
		{"named device absent", "good", DHT22, "iio:device7", nil, ErrNoDevice, "no such file", 1, fault.Absent},
		{"no iio at all", "nonexistent", DHT22, "auto", nil, ErrNoDevice, "", 1, fault.Absent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			s, err := New("dht", Opts{Model: tt.model, SysfsRoot: filepath.Join("testdata", tt.root), Device: tt.device, Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if !errors.Is(err, tt.wantErr) || (err != nil && !strings.Contains(err.Error(), tt.msg)) {
				t.Fatalf("Read err = %v, want %v containing %q", err, tt.wantErr, tt.msg)
			}
			if c := fault.Of(err); c != tt.class {
				t.Fatalf("fault.Of(%v) = %q, want %q", err, c, tt.class)
			}
			if err != nil && v != nil {
				t.Fatalf("Read returned values %v with error %v", v, err)
			}
			for k, want := range tt.want {
				if v[k] != want {
					t.Errorf("%s = %v, want %v", k, v[k], want)
				}
			}
			if len(v) != len(tt.want) {
				t.Errorf("Read = %v, want %v", v, tt.want)
			}
			if s.Failures() != tt.failures {
				t.Errorf("Failures = %d, want %d", s.Failures(), tt.failures)
			}
			if len(clock.sleeps) != 0 {
				t.Errorf("slept %v without a retry", clock.sleeps)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	tests := []struct {
		name     string
		model    Model
		errs     []error
		wantErr  error
		sleeps   []time.Duration
		failures uint64
		class    fault.Class // of the error, for the agent's health
	}{
		{"timeout then ok", DHT22, []error{syscall.ETIMEDOUT}, nil, []time.Duration{2 * time.Second}, 1, ""},
		{"eio twice then ok", DHT11, []error{syscall.EIO, syscall.EIO}, nil, []time.Duration{time.Second, time.Second}, 2, ""},
		{"gives up after retries", DHT22, []error{syscall.EIO, syscall.ETIMEDOUT, syscall.EIO}, syscall.EIO, []time.Duration{2 * time.Second, 2 * time.Second}, 3, fault.CRC},
		{"sensor silent", DHT22, []error{syscall.ETIMEDOUT, syscall.ETIMEDOUT, syscall.ETIMEDOUT}, syscall.ETIMEDOUT, []time.Duration{2 * time.Second, 2 * time.Second}, 3, fault.Timeout},
		{"device file vanished", DHT22, []error{syscall.ENOENT}, os.ErrNotExist, nil, 1, fault.Absent},
		{"permission is not retried", DHT22, []error{syscall.EACCES}, syscall.EACCES, nil, 1, fault.Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			files := &flakyFiles{errs: tt.errs}
			s, err := New("dht", Opts{Model: tt.model, SysfsRoot: "testdata/good", Files: files, Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Read = %v, %v; want err %v", v, err, tt.wantErr)
			}
			if c := fault.Of(err); c != tt.class {
				t.Fatalf("fault.Of(%v) = %q, want %q", err, c, tt.class)
			}
			if err == nil && v["temperature_c"] != 23.4 {
				t.Fatalf("Read = %v", v)
			}
			if err != nil && (v != nil || !strings.Contains(err.Error(), "in_temp_input")) {
				t.Fatalf("Read = %v, %v; want no values and the file named", v, err)
			}
			if !equalDurations(clock.sleeps, tt.sleeps) {
				t.Errorf("slept %v, want %v", clock.sleeps, tt.sleeps)
			}
			if s.Failures() != tt.failures {
				t.Errorf("Failures = %d, want %d", s.Failures(), tt.failures)
			}
		})
	}
}

func TestMinIntervalBetweenReads(t *testing.T) {
	clock := newClock()
	s, err := New("dht", Opts{Model: DHT22, SysfsRoot: "testdata/good", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Read(ctx); err != nil {
		t.Fatal(err)
	}
	clock.now = clock.now.Add(500 * time.Millisecond)
	if _, err := s.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{1500 * time.Millisecond}; !equalDurations(clock.sleeps, want) {
		t.Fatalf("slept %v, want %v (the rest of DHT22's 2 s)", clock.sleeps, want)
	}
	clock.now = clock.now.Add(10 * time.Second)
	if _, err := s.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if len(clock.sleeps) != 1 {
		t.Fatalf("slept %v after a long pause", clock.sleeps)
	}
}

func TestReadCanceledDuringRetry(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	clock := newClock()
	files := &flakyFiles{errs: []error{syscall.EIO}}
	s, _ := New("dht", Opts{Model: DHT22, SysfsRoot: "testdata/good", Files: files, Clock: cancelingClock{clock, cancel}})
	if _, err := s.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read = %v, want context.Canceled", err)
	}
}

// cancelingClock cancels the context when the sensor starts waiting.
type cancelingClock struct {
	*fakeClock
	cancel context.CancelFunc
}

func (c cancelingClock) Sleep(ctx context.Context, d time.Duration) error {
	c.cancel()
	return c.fakeClock.Sleep(ctx, d)
}

func TestRealClockSleepHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := (realClock{}).Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Fatalf("Sleep = %v after %v", err, time.Since(start))
	}
}

func TestFind(t *testing.T) {
	devs, err := Find("testdata/two")
	if err != nil || strings.Join(devs, ",") != "iio:device2,iio:device10" {
		t.Fatalf("Find = %v, %v", devs, err)
	}
	if _, err := Find("testdata/missing"); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Find(missing) = %v", err)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDeviceRenumbered: the overlay was reloaded and the device came back
// under another number; the next Read finds it again.
func TestDeviceRenumbered(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "bus/iio/devices")
	put := func(dev string) {
		t.Helper()
		dir := filepath.Join(base, dev)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range map[string]string{"name": "dht11\n", "in_temp_input": "19000\n", "in_humidityrelative_input": "60000\n"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	put("iio:device0")
	s, _ := New("dht", Opts{Model: DHT22, SysfsRoot: root, Clock: newClock()})
	ctx := context.Background()
	if v, err := s.Read(ctx); err != nil || v["temperature_c"] != 19 {
		t.Fatalf("first read: %v, %v", v, err)
	}
	os.RemoveAll(filepath.Join(base, "iio:device0"))
	if _, err := s.Read(ctx); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after removal: %v", err)
	}
	put("iio:device3")
	if v, err := s.Read(ctx); err != nil || v["humidity_pct"] != 60 {
		t.Fatalf("after renumbering: %v, %v", v, err)
	}
}
