// Package drivers defines what the agent polls: a Sensor that reads once,
// and a Spec (one entry of the config's sensors list) that Open turns into a
// Sensor. Each chip lives in its own subpackage; Open wires them explicitly.
package drivers

import (
	"context"
	"fmt"
	"time"
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
	Driver   string        `yaml:"driver"` // bme280, dht11, dht22, ds18b20, sim
	Interval time.Duration `yaml:"interval"`

	// BME280/BMP280 over I2C.
	Bus     string `yaml:"bus"`     // I2C bus name or number, "1" on a Pi
	Address uint16 `yaml:"address"` // 0x76 or 0x77

	// DHT11/DHT22 through the Linux IIO dht11 driver.
	IIODevice string `yaml:"iio_device"` // "auto" or "iio:device0"

	// DS18B20 through the Linux w1 sysfs.
	W1ID string `yaml:"w1_id"` // "auto" or "28-0316a2793aff"
}

// Check validates a Spec without touching hardware.
func Check(s Spec) error {
	switch s.Driver {
	case "bme280", "bmp280", "dht11", "dht22", "ds18b20", "sim":
		return nil
	case "":
		return fmt.Errorf("driver is required (bme280, dht11, dht22, ds18b20, sim)")
	default:
		return fmt.Errorf("unknown driver %q (bme280, dht11, dht22, ds18b20, sim)", s.Driver)
	}
}
