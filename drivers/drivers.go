// Package drivers defines what the agent polls: a Sensor that reads once,
// and a Spec (one entry of the config's sensors list) that Open turns into a
// Sensor. Each chip lives in its own subpackage; Open wires them explicitly,
// in one visible switch, with no init() registration.
//
//	if err := drivers.Check(spec); err != nil { ... }          // at config load
//	s, err := drivers.Open(spec, drivers.Env{SysfsRoot: "/sys"}) // at start
//	values, err := s.Read(ctx)                                  // every interval
package drivers

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"time"

	"github.com/edgepipe/sensorpipe/drivers/bme280"
	"github.com/edgepipe/sensorpipe/drivers/dht"
	"github.com/edgepipe/sensorpipe/drivers/ds18b20"
	"github.com/edgepipe/sensorpipe/drivers/sim"
)

// Sensor is one physical (or simulated) sensor. Read is never called
// concurrently on one Sensor; the agent owns the polling schedule.
type Sensor interface {
	// Name is the configured sensor name, used as an MQTT topic level.
	Name() string
	// Kind names the chip actually found (bme280, bmp280, dht22, ds18b20, sim).
	Kind() string
	// Read takes one measurement. It returns only finite, in-range values
	// keyed by the wire format's value keys, or an error.
	Read(ctx context.Context) (map[string]float64, error)
	// Close releases the bus or files the sensor holds.
	Close() error
}

// Spec is one entry of the agent config's `sensors:` list.
type Spec struct {
	Name     string        `yaml:"name"`
	Driver   string        `yaml:"driver"` // bme280, bmp280, dht11, dht22, ds18b20, sim
	Interval time.Duration `yaml:"interval"`

	// BME280/BMP280 over I2C.
	Bus     string `yaml:"bus"`     // I2C bus name or number, "1" on a Pi
	Address uint16 `yaml:"address"` // 0x76 or 0x77; 0 means 0x76
	// Oversampling of every measured quantity: 1, 2, 4, 8 or 16; 0 means 4.
	// More oversampling lowers noise and costs a longer measurement.
	Oversampling int `yaml:"oversampling"`
	// Filter is the IIR filter coefficient: 0 (off), 2, 4, 8 or 16. It
	// smooths short pressure spikes (a door slamming) at the cost of lag.
	Filter int `yaml:"filter"`

	// DHT11/DHT22 through the Linux IIO dht11 driver.
	IIODevice string `yaml:"iio_device"` // "auto" (or empty) or "iio:device0"

	// DS18B20 through the Linux w1 sysfs.
	W1ID string `yaml:"w1_id"` // "auto" (or empty) or "28-0316a2793aff"

	// Simulated sensor.
	Seed     int64   `yaml:"seed"`      // 0 derives a seed from the name
	FailRate float64 `yaml:"fail_rate"` // 0..1, probability that a Read fails
}

// Env is what Open needs from the machine. The zero value means the real
// machine with logging discarded.
type Env struct {
	// SysfsRoot is where IIO and w1 devices are looked up; "" means /sys.
	// Tests point it at a fixture tree.
	SysfsRoot string
	// Logger receives driver warnings (retries, ambiguous auto-detection);
	// nil discards them.
	Logger *slog.Logger
}

// Minimum time between two measurements of a DHT sensor (datasheets:
// DHT11 1 s, DHT22/AM2302 2 s). Reading faster returns stale or bad data.
const (
	DHT11MinInterval = time.Second
	DHT22MinInterval = 2 * time.Second
)

var (
	iioDeviceRe = regexp.MustCompile(`^iio:device[0-9]+$`)
	w1IDRe      = regexp.MustCompile(`^28-[0-9a-f]{12}$`)
)

// Check validates a Spec without touching hardware. Its messages name the
// field (the caller prefixes the key, e.g. "sensors[2]").
func Check(s Spec) error {
	if err := checkDriverFields(s); err != nil {
		return err
	}
	switch s.Driver {
	case "bme280", "bmp280":
		if s.Bus == "" {
			return fmt.Errorf(`bus is required for %s (the I2C bus, "1" on a Raspberry Pi)`, s.Driver)
		}
		switch s.Address {
		case 0, 0x76, 0x77:
		default:
			return fmt.Errorf("address 0x%02x is not a %s address (0x76 with SDO to GND, 0x77 with SDO to 3V3)", s.Address, s.Driver)
		}
		switch s.Oversampling {
		case 0, 1, 2, 4, 8, 16:
		default:
			return fmt.Errorf("oversampling %d is not 1, 2, 4, 8 or 16", s.Oversampling)
		}
		switch s.Filter {
		case 0, 2, 4, 8, 16:
		default:
			return fmt.Errorf("filter %d is not 0 (off), 2, 4, 8 or 16", s.Filter)
		}
	case "dht11", "dht22":
		if s.IIODevice != "" && s.IIODevice != "auto" && !iioDeviceRe.MatchString(s.IIODevice) {
			return fmt.Errorf(`iio_device %q is not "auto" or like "iio:device0"`, s.IIODevice)
		}
		minIv := DHT22MinInterval
		if s.Driver == "dht11" {
			minIv = DHT11MinInterval
		}
		if s.Interval != 0 && s.Interval < minIv {
			return fmt.Errorf("interval %v is shorter than the %s's minimum of %v between measurements", s.Interval, s.Driver, minIv)
		}
	case "ds18b20":
		if s.W1ID != "" && s.W1ID != "auto" && !w1IDRe.MatchString(s.W1ID) {
			return fmt.Errorf(`w1_id %q is not "auto" or a DS18B20 id like "28-0316a2793aff" (see /sys/bus/w1/devices)`, s.W1ID)
		}
	case "sim":
		if math.IsNaN(s.FailRate) || s.FailRate < 0 || s.FailRate > 1 {
			return fmt.Errorf("fail_rate %v is not between 0 and 1", s.FailRate)
		}
	case "":
		return fmt.Errorf("driver is required (bme280, bmp280, dht11, dht22, ds18b20, sim)")
	default:
		return fmt.Errorf("unknown driver %q (bme280, bmp280, dht11, dht22, ds18b20, sim)", s.Driver)
	}
	return nil
}

// checkDriverFields rejects fields that belong to another driver: they are
// almost always a typo in the driver name or a copied entry, and silently
// ignoring them would hide it.
func checkDriverFields(s Spec) error {
	owner := func(set bool, field string, drivers ...string) error {
		if !set {
			return nil
		}
		for _, d := range drivers {
			if s.Driver == d {
				return nil
			}
		}
		if s.Driver == "" {
			return nil // "driver is required" is the better message
		}
		return fmt.Errorf("%s does not apply to driver %s (only to %v)", field, s.Driver, drivers)
	}
	for _, err := range []error{
		owner(s.Bus != "", "bus", "bme280", "bmp280"),
		owner(s.Address != 0, "address", "bme280", "bmp280"),
		owner(s.Oversampling != 0, "oversampling", "bme280", "bmp280"),
		owner(s.Filter != 0, "filter", "bme280", "bmp280"),
		owner(s.IIODevice != "", "iio_device", "dht11", "dht22"),
		owner(s.W1ID != "", "w1_id", "ds18b20"),
		owner(s.Seed != 0, "seed", "sim"),
		owner(s.FailRate != 0, "fail_rate", "sim"),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// Open builds the driver named by spec.Driver. It checks spec first, so a
// caller that skipped Check still gets a clear error. Drivers backed by
// sysfs files find their device on the first Read, so a sensor whose
// overlay loads late still starts; I2C drivers talk to the chip here.
func Open(spec Spec, env Env) (Sensor, error) {
	if err := Check(spec); err != nil {
		return nil, fmt.Errorf("sensor %s: %w", spec.Name, err)
	}
	if env.SysfsRoot == "" {
		env.SysfsRoot = "/sys"
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	switch spec.Driver {
	case "sim":
		return sim.New(spec.Name, sim.Opts{Seed: spec.Seed, FailRate: spec.FailRate}), nil
	case "bme280", "bmp280":
		addr := spec.Address
		if addr == 0 {
			addr = 0x76
		}
		// Either driver name accepts either chip; Kind says which was found.
		s, err := bme280.Open(spec.Name, spec.Bus, addr, bme280.Opts{Oversampling: spec.Oversampling, Filter: spec.Filter})
		if err != nil {
			return nil, fmt.Errorf("sensor %s: %w", spec.Name, err)
		}
		return s, nil
	case "dht11", "dht22":
		model := dht.DHT22
		if spec.Driver == "dht11" {
			model = dht.DHT11
		}
		s, err := dht.New(spec.Name, dht.Opts{Model: model, SysfsRoot: env.SysfsRoot, Device: spec.IIODevice, Logger: env.Logger})
		if err != nil { // never return a typed nil inside the interface
			return nil, fmt.Errorf("sensor %s: %w", spec.Name, err)
		}
		return s, nil
	case "ds18b20":
		return ds18b20.New(spec.Name, ds18b20.Opts{SysfsRoot: env.SysfsRoot, ID: spec.W1ID, Logger: env.Logger}), nil
	}
	return nil, fmt.Errorf("sensor %s: driver %s: %w", spec.Name, spec.Driver, ErrNotImplemented)
}

// Every driver satisfies Sensor; dht also counts its retried failures.
var (
	_ Sensor = (*sim.Sensor)(nil)
	_ Sensor = (*bme280.Sensor)(nil)
	_ Sensor = (*dht.Sensor)(nil)
	_ Sensor = (*ds18b20.Sensor)(nil)
)
