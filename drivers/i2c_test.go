package drivers

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgepipe/sensorpipe/drivers/ads1x15"
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/scripts/testkit/i2cfake"
)

// fixtureEnv opens the I2C buses of testdata/i2c.json.
func fixtureEnv(t *testing.T) Env {
	t.Helper()
	buses, err := i2cfake.Load("testdata/i2c.json")
	if err != nil {
		t.Fatal(err)
	}
	return Env{OpenI2C: buses.Open}
}

// TestI2CFailureClasses: the I2C drivers, opened through the table on
// fixture buses, report their failures with their class.
func TestI2CFailureClasses(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want fault.Class
	}{
		{"aht20 good", Spec{Driver: "aht20", Bus: "1"}, ""},
		{"aht20 crc", Spec{Driver: "aht20", Bus: "crc"}, fault.CRC},
		{"scd4x good", Spec{Driver: "scd4x", Bus: "1"}, ""},
		{"scd4x crc", Spec{Driver: "scd4x", Bus: "crc"}, fault.CRC},
		{"bh1750 good", Spec{Driver: "bh1750", Bus: "1"}, ""},
		{"bh1750 saturated", Spec{Driver: "bh1750", Bus: "crc"}, fault.OutOfRange},
		{"bh1750 nothing at 0x5c", Spec{Driver: "bh1750", Bus: "1", Address: 0x5C}, fault.Absent},
		{"ina219 good", Spec{Driver: "ina219", Bus: "1"}, ""},
		{"ina219 overflow", Spec{Driver: "ina219", Bus: "crc"}, fault.OutOfRange},
		{"ads1115 good", Spec{Driver: "ads1115", Bus: "1", Channels: []ads1x15.Channel{{Input: "0"}}}, ""},
		{"ads1115 saturated", Spec{Driver: "ads1115", Bus: "crc", Channels: []ads1x15.Channel{{Input: "0"}}}, fault.OutOfRange},
		{"bme280 where a BME680 is", Spec{Driver: "bme280", Bus: "1"}, fault.Absent},
		{"bme280 nothing at 0x77", Spec{Driver: "bme280", Bus: "1", Address: 0x77}, fault.Absent},
	}
	env := fixtureEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Name = "s-1"
			s, err := Open(tt.spec, env)
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

// TestProbeI2C: the probe recognises the chips it can tell apart, leaves
// out what it cannot (a BME680 at 0x76), and says what it did not find.
func TestProbeI2C(t *testing.T) {
	dev := t.TempDir()
	for _, f := range []string{"i2c-1", "i2c-9"} {
		if err := os.WriteFile(filepath.Join(dev, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	found, notes := probeI2C(fixtureEnv(t), dev)
	if want := []Found{{Type: "i2c", ID: "1:0x38", Kind: "aht20"}, {Type: "i2c", ID: "1:0x62", Kind: "scd4x"}, {Type: "i2c", ID: "1:0x40", Kind: "ina219"}, {Type: "i2c", ID: "1:0x48", Kind: "ads1x15"}}; !slices.Equal(found, want) {
		t.Errorf("found %+v, want %+v", found, want)
	}
	for _, n := range []string{
		`i2c: open ` + filepath.Join(dev, "i2c-9") + `: i2cfake: no bus "9" in the fixture`,
		"i2c: no BME280/BMP280 answered at 0x76 or 0x77",
	} {
		if !slices.Contains(notes, n) {
			t.Errorf("notes %q lack %q", notes, n)
		}
	}
	if _, notes := probeI2C(Env{}, t.TempDir()); len(notes) != 1 {
		t.Errorf("no bus devices: notes %q, want the one about dtparam", notes)
	}
}
