// Package drivers defines what the agent polls: a Sensor that reads once,
// and a Spec (one entry of the config's sensors list) that Open turns into a
// Sensor. Each chip lives in its own subpackage; one visible table in this
// package wires them (names, fields, checks, Open, probing), with no init()
// registration. Check runs at config load, Open at start, Read on every
// tick: see the package Example (example_test.go). Every error of Open and
// Read carries a failure class (drivers/fault: absent, crc, timeout,
// out_of_range, power_on, other) that fault.Of returns.
package drivers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/edgepipe/sensorpipe/drivers/ads1x15"
	"github.com/edgepipe/sensorpipe/drivers/aht20"
	"github.com/edgepipe/sensorpipe/drivers/bh1750"
	"github.com/edgepipe/sensorpipe/drivers/bme280"
	"github.com/edgepipe/sensorpipe/drivers/dht"
	"github.com/edgepipe/sensorpipe/drivers/ds18b20"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
	"github.com/edgepipe/sensorpipe/drivers/ina219"
	"github.com/edgepipe/sensorpipe/drivers/scd4x"
	"github.com/edgepipe/sensorpipe/drivers/sim"
)

// Sensor is one physical (or simulated) sensor. Read is never called
// concurrently on one Sensor; the agent owns the polling schedule.
type Sensor interface {
	// Name is the configured sensor name, used as an MQTT topic level.
	Name() string
	// Kind names the chip actually found (bme280, bmp280, aht20, dht22, ...).
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
	Driver   string        `yaml:"driver"` // see Names
	Interval time.Duration `yaml:"interval"`

	// Report by exception, for every driver (agent/deadband): a reading
	// whose every value moved less than its Deadband amount since the last
	// stored reading is not stored; one is stored at least every
	// MaxSilence (0: 5m). Values not listed are compared exactly.
	Deadband   Deadband      `yaml:"deadband"`
	MaxSilence time.Duration `yaml:"max_silence"`

	// Every I2C chip (BME280/BMP280, AHT20, ...).
	Bus     string `yaml:"bus"`     // I2C bus name or number, "1" on a Pi
	Address uint16 `yaml:"address"` // 0 means the chip's default address

	// BME280/BMP280.
	// Oversampling of every measured quantity: 1, 2, 4, 8 or 16; 0 means 4.
	// More oversampling lowers noise and costs a longer measurement.
	Oversampling int `yaml:"oversampling"`
	// Filter is the IIR filter coefficient: 0 (off), 2, 4, 8 or 16. It
	// smooths short pressure spikes (a door slamming) at the cost of lag.
	Filter int `yaml:"filter"`

	// BH1750: "high" (1 lx steps), "high2" (0.5 lx) or "low" (4 lx);
	// "" means high.
	Resolution string `yaml:"resolution"`

	// INA219: the shunt resistance (0 means 0.1) and the largest current
	// to measure (0 means 3.2 A); the current step is max_current_a/32768.
	ShuntOhms   float64 `yaml:"shunt_ohms"`
	MaxCurrentA float64 `yaml:"max_current_a"`

	// ADS1115/ADS1015: the inputs to convert, each with its full scale,
	// value key (field_unit) and linear scale from volts.
	Channels []ads1x15.Channel `yaml:"channels"`

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
	// OpenI2C opens an I2C bus by its configured name ("1"); nil means
	// i2cbus.Open, the real Linux bus. Tests and `edge-agent sensors`
	// fixtures pass a simulated bus.
	OpenI2C i2cbus.Opener
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

// A driver is one entry of the table below: everything the agent knows
// about one chip family. Adding a driver means adding its fields to Spec and
// one entry here; Check, Open, the error messages and `edge-agent sensors`
// all read the table.
type driver struct {
	// names are the values of Spec.Driver this entry answers to.
	names []string
	// fields are the yaml keys of Spec that belong to this driver; any other
	// driver-specific key set on its entries is refused.
	fields []string
	// check validates the driver's own fields (nil: nothing to check).
	check func(s Spec) error
	// open builds the sensor from a checked Spec, with env's defaults set.
	open func(s Spec, env Env) (Sensor, error)
	// probe lists the devices of this family the machine has, and says why
	// none was found (nil: nothing to look for, as for sim, or an I2C chip).
	probe func(env Env, devDir string) ([]Found, []string)
	// i2c says how to find this family's chips on an I2C bus (nil: not an
	// I2C chip, or one that cannot be told apart from others at its
	// addresses).
	i2c *i2cChip
}

// i2cChip is how `edge-agent sensors` recognises a chip on an I2C bus.
type i2cChip struct {
	// what names the family in the "none found" note ("BME280/BMP280").
	what string
	// addrs are the addresses the chip can be strapped to.
	addrs []uint16
	// identify returns the kind of chip at addr, or an error when the
	// device there is not one of this family (or nothing answers). It
	// must leave a running chip as it found it.
	identify func(bus i2c.Bus, addr uint16) (string, error)
}

// table is the one list of drivers, in the order messages name them.
func table() []driver {
	return []driver{
		{
			names:  []string{"bme280", "bmp280"},
			fields: []string{"bus", "address", "oversampling", "filter"},
			check:  checkBME280,
			open: func(s Spec, env Env) (Sensor, error) {
				// Either driver name accepts either chip; Kind says which was found.
				return openI2C(s, env, 0x76, func(bus i2c.Bus, addr uint16) (Sensor, error) {
					return bme280.New(s.Name, bus, addr, bme280.Opts{Oversampling: s.Oversampling, Filter: s.Filter})
				})
			},
			i2c: &i2cChip{what: "BME280/BMP280", addrs: []uint16{0x76, 0x77}, identify: bme280.Probe},
		},
		{
			names:  []string{"aht20"},
			fields: []string{"bus", "address"},
			check:  func(s Spec) error { return checkI2C(s, aht20.Addr) },
			open: func(s Spec, env Env) (Sensor, error) {
				return openI2C(s, env, aht20.Addr, func(bus i2c.Bus, _ uint16) (Sensor, error) {
					return aht20.New(s.Name, bus)
				})
			},
			i2c: &i2cChip{what: "AHT20", addrs: []uint16{aht20.Addr}, identify: aht20.Probe},
		},
		{
			names:  []string{"scd4x"},
			fields: []string{"bus", "address"},
			check: func(s Spec) error {
				if s.Interval != 0 && s.Interval < scd4x.Period {
					return fmt.Errorf("interval %v is shorter than the scd4x's measurement period of %v", s.Interval, scd4x.Period)
				}
				return checkI2C(s, scd4x.Addr)
			},
			open: func(s Spec, env Env) (Sensor, error) {
				return openI2C(s, env, scd4x.Addr, func(bus i2c.Bus, _ uint16) (Sensor, error) {
					return scd4x.New(s.Name, bus)
				})
			},
			i2c: &i2cChip{what: "SCD4x", addrs: []uint16{scd4x.Addr}, identify: scd4x.Probe},
		},
		{
			// No i2c entry: the chip has no id register to tell it apart.
			names:  []string{"bh1750"},
			fields: []string{"bus", "address", "resolution"},
			check: func(s Spec) error {
				if s.Resolution != "" && !slices.Contains(bh1750.Resolutions(), s.Resolution) {
					return fmt.Errorf("resolution %q is not %s", s.Resolution, strings.Join(bh1750.Resolutions(), ", "))
				}
				return checkI2C(s, bh1750.Addr, bh1750.AddrAlt)
			},
			open: func(s Spec, env Env) (Sensor, error) {
				return openI2C(s, env, bh1750.Addr, func(bus i2c.Bus, addr uint16) (Sensor, error) {
					return bh1750.New(s.Name, bus, addr, bh1750.Opts{Resolution: s.Resolution})
				})
			},
		},
		{
			names:  []string{"ina219"},
			fields: []string{"bus", "address", "shunt_ohms", "max_current_a"},
			check: func(s Spec) error {
				if err := ina219.CheckOpts(ina219Opts(s)); err != nil {
					return err
				}
				return checkI2C(s, i2cRange(ina219.Addr, 0x4F)...)
			},
			open: func(s Spec, env Env) (Sensor, error) {
				return openI2C(s, env, ina219.Addr, func(bus i2c.Bus, addr uint16) (Sensor, error) {
					return ina219.New(s.Name, bus, addr, ina219Opts(s))
				})
			},
			i2c: &i2cChip{what: "INA219 (configured as at power-on or by us)", addrs: i2cRange(ina219.Addr, 0x4F), identify: ina219.Probe},
		},
		{
			names:  []string{"ads1115", "ads1015"},
			fields: []string{"bus", "address", "channels"},
			check: func(s Spec) error {
				if err := ads1x15.CheckChannels(s.Channels); err != nil {
					return err
				}
				return checkI2C(s, i2cRange(ads1x15.Addr, 0x4B)...)
			},
			open: func(s Spec, env Env) (Sensor, error) {
				return openI2C(s, env, ads1x15.Addr, func(bus i2c.Bus, addr uint16) (Sensor, error) {
					return ads1x15.New(s.Name, bus, addr, ads1x15.Opts{Chip: s.Driver, Channels: s.Channels})
				})
			},
			i2c: &i2cChip{what: "ADS1115/ADS1015", addrs: i2cRange(ads1x15.Addr, 0x4B), identify: ads1x15.Probe},
		},
		{
			names:  []string{"dht11", "dht22"},
			fields: []string{"iio_device"},
			check:  checkDHT,
			open: func(s Spec, env Env) (Sensor, error) {
				model := dht.DHT22
				if s.Driver == "dht11" {
					model = dht.DHT11
				}
				return dht.New(s.Name, dht.Opts{Model: model, SysfsRoot: env.SysfsRoot, Device: s.IIODevice, Logger: env.Logger})
			},
			probe: func(env Env, _ string) ([]Found, []string) {
				devs, err := dht.Find(env.SysfsRoot)
				return found("iio", "dht11/dht22", devs, err)
			},
		},
		{
			names:  []string{"ds18b20"},
			fields: []string{"w1_id"},
			check: func(s Spec) error {
				if s.W1ID != "" && s.W1ID != "auto" && !w1IDRe.MatchString(s.W1ID) {
					return fmt.Errorf(`w1_id %q is not "auto" or a DS18B20 id like "28-0316a2793aff" (see /sys/bus/w1/devices)`, s.W1ID)
				}
				return nil
			},
			open: func(s Spec, env Env) (Sensor, error) {
				return ds18b20.New(s.Name, ds18b20.Opts{SysfsRoot: env.SysfsRoot, ID: s.W1ID, Logger: env.Logger}), nil
			},
			probe: func(env Env, _ string) ([]Found, []string) {
				ids, err := ds18b20.Find(env.SysfsRoot)
				return found("w1", "ds18b20", ids, err)
			},
		},
		{
			names:  []string{"sim"},
			fields: []string{"seed", "fail_rate"},
			check: func(s Spec) error {
				if math.IsNaN(s.FailRate) || s.FailRate < 0 || s.FailRate > 1 {
					return fmt.Errorf("fail_rate %v is not between 0 and 1", s.FailRate)
				}
				return nil
			},
			open: func(s Spec, _ Env) (Sensor, error) {
				return sim.New(s.Name, sim.Opts{Seed: s.Seed, FailRate: s.FailRate}), nil
			},
		},
	}
}

// lookup returns the table entry for a driver name.
func lookup(name string) (driver, bool) {
	for _, d := range table() {
		if slices.Contains(d.names, name) {
			return d, true
		}
	}
	return driver{}, false
}

// Names lists every driver name Spec.Driver accepts, in table order.
func Names() []string {
	var names []string
	for _, d := range table() {
		names = append(names, d.names...)
	}
	return names
}

// Check validates a Spec without touching hardware. Its messages name the
// field (the caller prefixes the key, e.g. "sensors[2]").
func Check(s Spec) error {
	if s.Driver == "" {
		return fmt.Errorf("driver is required (%s)", strings.Join(Names(), ", "))
	}
	d, ok := lookup(s.Driver)
	if !ok {
		return fmt.Errorf("unknown driver %q (%s)", s.Driver, strings.Join(Names(), ", "))
	}
	// A field of another driver is almost always a typo in the driver name
	// or a copied entry; silently ignoring it would hide that.
	for _, f := range setFields(s) {
		if !slices.Contains(d.fields, f) {
			return fmt.Errorf("%s does not apply to driver %s (only to %v)", f, s.Driver, owners(f))
		}
	}
	if d.check == nil {
		return nil
	}
	return d.check(s)
}

// setFields returns the yaml keys of the driver-specific Spec fields that
// are not zero, in Spec's order.
func setFields(s Spec) []string {
	v := reflect.ValueOf(s)
	var set []string
	for i := range v.NumField() {
		key, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		switch key {
		case "name", "driver", "interval", "deadband", "max_silence":
			continue // common to every driver
		}
		if !v.Field(i).IsZero() {
			set = append(set, key)
		}
	}
	return set
}

// owners lists the driver names a field belongs to.
func owners(field string) []string {
	var names []string
	for _, d := range table() {
		if slices.Contains(d.fields, field) {
			names = append(names, d.names...)
		}
	}
	return names
}

// ina219Opts fills the zero fields of s's shunt with the defaults.
func ina219Opts(s Spec) ina219.Opts {
	o := ina219.Opts{ShuntOhms: s.ShuntOhms, MaxCurrentA: s.MaxCurrentA}
	if o.ShuntOhms == 0 {
		o.ShuntOhms = ina219.DefaultOpts.ShuntOhms
	}
	if o.MaxCurrentA == 0 {
		o.MaxCurrentA = ina219.DefaultOpts.MaxCurrentA
	}
	return o
}

// i2cRange lists the addresses from..to.
func i2cRange(from, to uint16) []uint16 {
	var as []uint16
	for a := from; a <= to; a++ {
		as = append(as, a)
	}
	return as
}

// checkI2C requires a bus and an address among addrs (0 is the first).
func checkI2C(s Spec, addrs ...uint16) error {
	if s.Bus == "" {
		return fmt.Errorf(`bus is required for %s (the I2C bus, "1" on a Raspberry Pi)`, s.Driver)
	}
	if s.Address != 0 && !slices.Contains(addrs, s.Address) {
		return fmt.Errorf("address 0x%02x is not one of the %s's addresses (%s)", s.Address, s.Driver, addrList(addrs))
	}
	return nil
}

func checkBME280(s Spec) error {
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
	return nil
}

func checkDHT(s Spec) error {
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
	d, _ := lookup(spec.Driver) // Check found it
	s, err := d.open(spec, env.withDefaults())
	if err != nil { // never return a typed nil inside the interface
		return nil, fmt.Errorf("sensor %s: %w", spec.Name, err)
	}
	return s, nil
}

func (env Env) withDefaults() Env {
	if env.SysfsRoot == "" {
		env.SysfsRoot = "/sys"
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	if env.OpenI2C == nil {
		env.OpenI2C = i2cbus.Open
	}
	return env
}

// Found is a device present on the machine, configured or not.
type Found struct {
	Type string `json:"type"` // i2c, iio, w1
	ID   string `json:"id"`   // "1:0x76", "iio:device0", "28-0316a2793aff"
	Kind string `json:"kind"` // bme280, bmp280, dht11/dht22, ds18b20
}

// Probe looks for every driver's devices on the machine: I2C chips under
// devDir ("/dev"), IIO and 1-Wire devices under env.SysfsRoot. It returns
// what it found and, per kind of device it found none of or could not
// list, a note saying why.
func Probe(env Env, devDir string) (found []Found, notes []string) {
	env = env.withDefaults()
	for _, d := range table() {
		if d.probe == nil {
			continue
		}
		f, n := d.probe(env, devDir)
		found = append(found, f...)
		notes = append(notes, n...)
	}
	f, n := probeI2C(env, devDir)
	return append(f, found...), append(n, notes...)
}

// probeI2C opens every devDir/i2c-* bus and asks each I2C family of the
// table at its addresses. With no bus device it touches no hardware.
func probeI2C(env Env, devDir string) ([]Found, []string) {
	paths, _ := filepath.Glob(filepath.Join(devDir, "i2c-*"))
	if len(paths) == 0 {
		return nil, []string{fmt.Sprintf("i2c: no %s/i2c-* (enable with dtparam=i2c_arm=on in config.txt)", devDir)}
	}
	sort.Strings(paths)
	var chips []*i2cChip
	for _, d := range table() {
		if d.i2c != nil {
			chips = append(chips, d.i2c)
		}
	}
	var fs []Found
	var notes []string
	seen := make([]bool, len(chips))
	for _, p := range paths {
		name := strings.TrimPrefix(filepath.Base(p), "i2c-")
		bus, err := env.OpenI2C(name)
		if err != nil {
			notes = append(notes, fmt.Sprintf("i2c: open %s: %v", p, err))
			continue
		}
		for i, c := range chips {
			for _, addr := range c.addrs {
				if kind, err := c.identify(bus, addr); err == nil {
					fs = append(fs, Found{Type: "i2c", ID: fmt.Sprintf("%s:0x%02x", name, addr), Kind: kind})
					seen[i] = true
				}
			}
		}
		bus.Close()
	}
	for i, c := range chips {
		if !seen[i] {
			notes = append(notes, fmt.Sprintf("i2c: no %s answered at %s", c.what, addrList(c.addrs)))
		}
	}
	return fs, notes
}

// addrList formats addresses as "0x76 or 0x77", or a range "0x40..0x4f".
func addrList(addrs []uint16) string {
	if len(addrs) > 2 && int(addrs[len(addrs)-1]-addrs[0]) == len(addrs)-1 {
		return fmt.Sprintf("0x%02x..0x%02x", addrs[0], addrs[len(addrs)-1])
	}
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = fmt.Sprintf("0x%02x", a)
	}
	return strings.Join(parts, " or ")
}

// openI2C opens the bus s names and the chip at s.Address (def when 0)
// with open; the returned Sensor closes the bus after the chip.
func openI2C(s Spec, env Env, def uint16, open func(bus i2c.Bus, addr uint16) (Sensor, error)) (Sensor, error) {
	addr := s.Address
	if addr == 0 {
		addr = def
	}
	bus, err := env.OpenI2C(s.Bus)
	if err != nil {
		return nil, fmt.Errorf("%s bus %s addr 0x%02x: %w", s.Driver, s.Bus, addr, err)
	}
	sn, err := open(namedBus{bus, s.Bus}, addr)
	if err != nil {
		bus.Close()
		return nil, err
	}
	return &ownBus{Sensor: sn, bus: bus}, nil
}

// namedBus makes the drivers' messages say "bus 1" as the config does,
// where periph's Linux bus says "I2C1".
type namedBus struct {
	i2c.Bus
	name string
}

func (b namedBus) String() string { return "bus " + b.name }

// ownBus is a Sensor that owns its bus.
type ownBus struct {
	Sensor
	bus i2c.BusCloser
}

func (o *ownBus) Close() error { return errors.Join(o.Sensor.Close(), o.bus.Close()) }

// found turns a sysfs lookup into Found entries, or its error into a note.
func found(typ, kind string, ids []string, err error) ([]Found, []string) {
	if err != nil {
		return nil, []string{typ + ": " + err.Error()}
	}
	fs := make([]Found, 0, len(ids))
	for _, id := range ids {
		fs = append(fs, Found{Type: typ, ID: id, Kind: kind})
	}
	return fs, nil
}

// Every driver satisfies Sensor.
var (
	_ Sensor = (*sim.Sensor)(nil)
	_ Sensor = (*bme280.Sensor)(nil)
	_ Sensor = (*aht20.Sensor)(nil)
	_ Sensor = (*scd4x.Sensor)(nil)
	_ Sensor = (*bh1750.Sensor)(nil)
	_ Sensor = (*ina219.Sensor)(nil)
	_ Sensor = (*ads1x15.Sensor)(nil)
	_ Sensor = (*dht.Sensor)(nil)
	_ Sensor = (*ds18b20.Sensor)(nil)
)
