package drivers

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgepipe/sensorpipe/drivers/ads1x15"
	"github.com/edgepipe/sensorpipe/drivers/fault"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want string // "" = valid; else a substring of the error
	}{
		{"bme280 ok", Spec{Driver: "bme280", Bus: "1", Address: 0x76}, ""},
		{"bme280 0x77 tuned", Spec{Driver: "bme280", Bus: "1", Address: 0x77, Oversampling: 16, Filter: 4}, ""},
		{"bmp280 default address", Spec{Driver: "bmp280", Bus: "/dev/i2c-1"}, ""},
		{"bme280 no bus", Spec{Driver: "bme280", Address: 0x76}, "bus is required"},
		{"bme280 bad address", Spec{Driver: "bme280", Bus: "1", Address: 0x40}, "address 0x40 is not"},
		{"bme280 bad oversampling", Spec{Driver: "bme280", Bus: "1", Oversampling: 3}, "oversampling 3"},
		{"bme280 bad filter", Spec{Driver: "bme280", Bus: "1", Filter: 1}, "filter 1"},
		{"dht22 ok", Spec{Driver: "dht22", IIODevice: "auto", Interval: 5 * time.Second}, ""},
		{"dht22 named device", Spec{Driver: "dht22", IIODevice: "iio:device3"}, ""},
		{"dht22 too fast", Spec{Driver: "dht22", Interval: time.Second}, "shorter than the dht22's minimum of 2s"},
		{"dht11 1s ok", Spec{Driver: "dht11", Interval: time.Second}, ""},
		{"dht11 too fast", Spec{Driver: "dht11", Interval: 500 * time.Millisecond}, "minimum of 1s"},
		{"dht bad device", Spec{Driver: "dht11", IIODevice: "/sys/bus/iio/devices/iio:device0"}, "iio_device"},
		{"ds18b20 auto", Spec{Driver: "ds18b20", W1ID: "auto"}, ""},
		{"ds18b20 id", Spec{Driver: "ds18b20", W1ID: "28-0316a2793aff"}, ""},
		{"ds18b20 wrong family", Spec{Driver: "ds18b20", W1ID: "10-0316a2793aff"}, "w1_id"},
		{"aht20 ok", Spec{Driver: "aht20", Bus: "1"}, ""},
		{"aht20 explicit address", Spec{Driver: "aht20", Bus: "1", Address: 0x38}, ""},
		{"aht20 no bus", Spec{Driver: "aht20"}, "bus is required for aht20"},
		{"aht20 bad address", Spec{Driver: "aht20", Bus: "1", Address: 0x39}, "address 0x39 is not one of the aht20's addresses (0x38)"},
		{"aht20 oversampling", Spec{Driver: "aht20", Bus: "1", Oversampling: 2}, "oversampling does not apply to driver aht20"},
		{"scd4x ok", Spec{Driver: "scd4x", Bus: "1", Interval: 5 * time.Second}, ""},
		{"scd4x faster than it measures", Spec{Driver: "scd4x", Bus: "1", Interval: 2 * time.Second}, "interval 2s is shorter than the scd4x's measurement period of 5s"},
		{"scd4x bad address", Spec{Driver: "scd4x", Bus: "1", Address: 0x61}, "address 0x61 is not one of the scd4x's addresses (0x62)"},
		{"bh1750 ok", Spec{Driver: "bh1750", Bus: "1", Address: 0x5C, Resolution: "high2"}, ""},
		{"bh1750 default", Spec{Driver: "bh1750", Bus: "1"}, ""},
		{"bh1750 bad resolution", Spec{Driver: "bh1750", Bus: "1", Resolution: "max"}, `resolution "max" is not high, high2, low`},
		{"bh1750 bad address", Spec{Driver: "bh1750", Bus: "1", Address: 0x24}, "(0x23 or 0x5c)"},
		{"resolution on aht20", Spec{Driver: "aht20", Bus: "1", Resolution: "low"}, "resolution does not apply to driver aht20 (only to [bh1750])"},
		{"ina219 defaults", Spec{Driver: "ina219", Bus: "1"}, ""},
		{"ina219 0x4f 10 A", Spec{Driver: "ina219", Bus: "1", Address: 0x4F, ShuntOhms: 0.01, MaxCurrentA: 10}, ""},
		{"ina219 bad address", Spec{Driver: "ina219", Bus: "1", Address: 0x50}, "(0x40..0x4f)"},
		{"ina219 negative shunt", Spec{Driver: "ina219", Bus: "1", ShuntOhms: -0.1}, "shunt_ohms -0.1 is not a positive resistance"},
		{"ina219 current beyond the shunt range", Spec{Driver: "ina219", Bus: "1", MaxCurrentA: 20}, "max_current_a 20 A through shunt_ohms 0.1 Ω is 2 V"},
		{"ads1115 soil", Spec{Driver: "ads1115", Bus: "1", Address: 0x4B, Channels: []ads1x15.Channel{{Input: "0", Field: "soil_moisture", Unit: "pct", Scale: -62.5, Offset: 175}}}, ""},
		{"ads1015 no channels", Spec{Driver: "ads1015", Bus: "1"}, "channels: at least one is needed"},
		{"ads1115 bad input", Spec{Driver: "ads1115", Bus: "1", Channels: []ads1x15.Channel{{Input: "0"}, {Input: "5"}}}, `channels[1].input "5"`},
		{"ads1115 bad address", Spec{Driver: "ads1115", Bus: "1", Address: 0x4C, Channels: []ads1x15.Channel{{Input: "0"}}}, "(0x48..0x4b)"},
		{"channels on ina219", Spec{Driver: "ina219", Bus: "1", Channels: []ads1x15.Channel{{Input: "0"}}}, "channels does not apply to driver ina219 (only to [ads1115 ads1015])"},
		{"sim ok", Spec{Driver: "sim", Seed: 4, FailRate: 0.5}, ""},
		{"sim fail_rate", Spec{Driver: "sim", FailRate: 1.5}, "fail_rate 1.5"},
		{"no driver", Spec{}, "driver is required"},
		{"unknown driver", Spec{Driver: "dht21"}, `unknown driver "dht21"`},
		{"foreign field", Spec{Driver: "dht22", Bus: "1"}, "bus does not apply to driver dht22"},
		{"seed on bme", Spec{Driver: "bme280", Bus: "1", Seed: 3}, "seed does not apply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.spec)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Check = %v, want ok", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Check = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestSpecYAML(t *testing.T) {
	var s []Spec
	src := `
- {name: bme280-0x76, driver: bme280, bus: "1", address: 0x76, interval: 10s, oversampling: 2, filter: 4}
- {name: sim-1, driver: sim, seed: 9, fail_rate: 0.1}
- {name: soil, driver: ads1115, bus: "1", channels: [{input: 0, field: soil_moisture, unit: pct, scale: -62.5, offset: 175}]}
`
	if err := yaml.Unmarshal([]byte(src), &s); err != nil {
		t.Fatal(err)
	}
	want := []Spec{
		{Name: "bme280-0x76", Driver: "bme280", Bus: "1", Address: 0x76, Interval: 10 * time.Second, Oversampling: 2, Filter: 4},
		{Name: "sim-1", Driver: "sim", Seed: 9, FailRate: 0.1},
		{Name: "soil", Driver: "ads1115", Bus: "1", Channels: []ads1x15.Channel{{Input: "0", Field: "soil_moisture", Unit: "pct", Scale: -62.5, Offset: 175}}},
	}
	for i := range want {
		if !reflect.DeepEqual(s[i], want[i]) {
			t.Errorf("entry %d = %+v, want %+v", i, s[i], want[i])
		}
	}
}

func TestOpenSim(t *testing.T) {
	s, err := Open(Spec{Name: "sim-1", Driver: "sim", Seed: 1}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Name() != "sim-1" || s.Kind() != "sim" {
		t.Fatalf("Name/Kind = %s/%s", s.Name(), s.Kind())
	}
	v, err := s.Read(context.Background())
	if err != nil || len(v) != 3 {
		t.Fatalf("Read = %v, %v", v, err)
	}
}

func TestOpenRejectsBadSpec(t *testing.T) {
	_, err := Open(Spec{Name: "x", Driver: "sim", FailRate: -1}, Env{})
	if err == nil || !strings.Contains(err.Error(), "sensor x: fail_rate") {
		t.Fatalf("Open = %v", err)
	}
}

func TestOpenDHT(t *testing.T) {
	s, err := Open(Spec{Name: "dht22-gpio4", Driver: "dht22", IIODevice: "auto"}, Env{SysfsRoot: "dht/testdata/good"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Read(context.Background())
	if err != nil || v["temperature_c"] != 23.4 || v["humidity_pct"] != 48.2 || s.Kind() != "dht22" {
		t.Fatalf("Read = %v, %v (kind %s)", v, err, s.Kind())
	}
}

func TestOpenDS18B20(t *testing.T) {
	s, err := Open(Spec{Name: "ds18b20-1", Driver: "ds18b20", W1ID: "auto"}, Env{SysfsRoot: "ds18b20/testdata/good"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Read(context.Background())
	if err != nil || v["temperature_c"] != 23.125 || s.Kind() != "ds18b20" || s.Name() != "ds18b20-1" {
		t.Fatalf("Read = %v, %v", v, err)
	}
}

// TestTableCoversSpec keeps the driver table and Spec in step: every
// driver-specific Spec key belongs to a driver, every key a driver claims
// exists, and every driver name opens through the table.
func TestTableCoversSpec(t *testing.T) {
	all := Spec{Bus: "1", Address: 1, Oversampling: 1, Filter: 1, Resolution: "x", ShuntOhms: 1, MaxCurrentA: 1, Channels: []ads1x15.Channel{{}}, IIODevice: "x", W1ID: "x", Seed: 1, FailRate: 1}
	keys := setFields(all)
	if len(keys) != 12 {
		t.Fatalf("setFields(every field set) = %v: a Spec field is missing from this test", keys)
	}
	claimed := map[string]bool{}
	for _, d := range table() {
		if len(d.names) == 0 || d.open == nil {
			t.Errorf("entry %v: needs names and open", d.names)
		}
		for _, f := range d.fields {
			if !slices.Contains(keys, f) {
				t.Errorf("driver %v claims %q, which is not a Spec key", d.names, f)
			}
			claimed[f] = true
		}
	}
	for _, k := range keys {
		if !claimed[k] {
			t.Errorf("Spec key %q belongs to no driver", k)
		}
	}
	if got := strings.Join(Names(), ","); got != "bme280,bmp280,aht20,scd4x,bh1750,ina219,ads1115,ads1015,dht11,dht22,ds18b20,sim" {
		t.Errorf("Names = %s", got)
	}
}

// TestFailureClasses: every driver's failures, opened through the table as
// the agent opens them, reach the caller with their fault class, which
// the agent's health telemetry reports.
func TestFailureClasses(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		root string // sysfs fixture tree
		want fault.Class
	}{
		{"ds18b20 crc NO", Spec{Driver: "ds18b20"}, "ds18b20/testdata/crcno", fault.CRC},
		{"ds18b20 empty temperature file", Spec{Driver: "ds18b20"}, "ds18b20/testdata/tempempty", fault.CRC},
		{"ds18b20 85 °C", Spec{Driver: "ds18b20"}, "ds18b20/testdata/poweron", fault.PowerOn},
		{"ds18b20 all zeros", Spec{Driver: "ds18b20"}, "ds18b20/testdata/zeros", fault.OutOfRange},
		{"ds18b20 garbage", Spec{Driver: "ds18b20"}, "ds18b20/testdata/garbage", fault.Other},
		{"ds18b20 missing", Spec{Driver: "ds18b20"}, "ds18b20/testdata/missing", fault.Absent},
		{"ds18b20 good", Spec{Driver: "ds18b20"}, "ds18b20/testdata/good", ""},
		{"dht22 too hot", Spec{Driver: "dht22"}, "dht/testdata/hot", fault.OutOfRange},
		{"dht11 too cold", Spec{Driver: "dht11"}, "dht/testdata/cold", fault.OutOfRange},
		{"dht22 garbage", Spec{Driver: "dht22"}, "dht/testdata/garbage", fault.Other},
		{"dht22 missing", Spec{Driver: "dht22"}, "dht/testdata/missing", fault.Absent},
		{"dht22 good", Spec{Driver: "dht22"}, "dht/testdata/good", ""},
		{"sim failing", Spec{Driver: "sim", FailRate: 1}, "", fault.Other},
		{"sim good", Spec{Driver: "sim"}, "", ""},
		{"bme280 without its bus", Spec{Driver: "bme280", Bus: "97"}, "", fault.Absent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Name = "s-1"
			s, err := Open(tt.spec, Env{SysfsRoot: tt.root})
			if err == nil {
				defer s.Close()
				_, err = s.Read(context.Background())
			}
			if got := fault.Of(err); got != tt.want {
				t.Fatalf("class of %v = %q, want %q", err, got, tt.want)
			}
		})
	}
}
