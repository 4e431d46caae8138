package ads1x15

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"

	"go.yaml.in/yaml/v3"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

func be(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// convOps is one channel's conversion: periph writes the config register
// (OS=1 starts it), waits 1/128 s and reads the conversion register
// (stale: what it got); we read the config register (busy times with OS
// 0, then OS 1) and the conversion register again (code).
func convOps(addr, config uint16, stale uint16, busy int, code uint16) []i2ctest.IO {
	ops := []i2ctest.IO{
		{Addr: addr, W: []byte{0x01, byte(config >> 8), byte(config)}},
		{Addr: addr, W: []byte{0x00}, R: be(stale)},
	}
	for range busy {
		ops = append(ops, i2ctest.IO{Addr: addr, W: []byte{0x01}, R: be(config &^ 0x8000)})
	}
	return append(ops, i2ctest.IO{Addr: addr, W: []byte{0x01}, R: be(config)}, i2ctest.IO{Addr: addr, W: []byte{0x00}, R: be(code)})
}

func concat(parts ...[]i2ctest.IO) []i2ctest.IO {
	var out []i2ctest.IO
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestReadDatasheetExamples checks the config words periph writes
// against the datasheet's register map (ADS111x 9.6.3: OS | MUX | PGA |
// MODE | DR | COMP_QUE) and the transfer function (9.3.3, table 3:
// code x FSR / 2^15; ADS1115 at ±4.096 V: 125 µV per code; ADS1015: 12
// bits left-aligned, 2 mV per code at ±4.096 V), then the linear scale.
func TestReadDatasheetExamples(t *testing.T) {
	soil := Channel{Input: "0", FullScaleV: 4.096, Field: "soil_moisture", Unit: "pct", Scale: -62.5, Offset: 175}
	tests := []struct {
		name  string
		chip  string
		chans []Channel
		ops   []i2ctest.IO
		want  map[string]float64
	}{
		{"ads1115 AIN0, 4.096 V, 0x2000 = 1.024 V", "ads1115", []Channel{{Input: "0"}},
			// 0x8000 OS | 0x4000 MUX AIN0/GND | 0x0200 PGA 4.096 | 0x0100 single | 0x0080 128 SPS | 0x0003 no comparator
			convOps(0x48, 0xC383, 0x2000, 0, 0x2000), map[string]float64{"ain0_v": 1.024}},
		{"ads1115 AIN0-AIN1 at 2.048 V is the power-on config 0x8583", "ads1115", []Channel{{Input: "0-1", FullScaleV: 2.048}},
			// -1 code = -62.5 µV
			convOps(0x48, 0x8583, 0xFFFF, 0, 0xFFFF), map[string]float64{"ain0_1_v": -0.0000625}},
		{"soil moisture: 2.048 V is 47 %", "ads1115", []Channel{soil},
			convOps(0x48, 0xC383, 0x4000, 0, 0x4000), map[string]float64{"soil_moisture_pct": 47}},
		{"stale code from periph is replaced", "ads1115", []Channel{{Input: "0"}},
			convOps(0x48, 0xC383, 0x1234, 0, 0x2000), map[string]float64{"ain0_v": 1.024}},
		{"busy twice, then done", "ads1115", []Channel{{Input: "0"}},
			convOps(0x48, 0xC383, 0x1234, 2, 0x2000), map[string]float64{"ain0_v": 1.024}},
		{"ads1015 AIN3 at 6.144 V, 12-bit code 0x400", "ads1015", []Channel{{Input: "3", FullScaleV: 6.144}},
			// 0x7000 MUX AIN3/GND | 0x0000 PGA 6.144 | DR 128 SPS is 0x0000 on the ADS1015; 0x400 x 3 mV = 3.072 V
			convOps(0x48, 0xF103, 0x4000, 0, 0x4000), map[string]float64{"ain3_v": 3.072}},
		{"two channels", "ads1115", []Channel{{Input: "0"}, {Input: "1", FullScaleV: 0.256, Field: "shunt", Unit: "a", Scale: 10}},
			// AIN1 0x5000 | PGA 0.256 0x0A00: 0x8000|0x5000|0x0A00|0x0100|0x0080|0x0003; 0x4000 -> 0.128 V x 10
			concat(convOps(0x48, 0xC383, 0, 0, 0x2000), convOps(0x48, 0xDB83, 0, 0, 0x4000)), map[string]float64{"ain0_v": 1.024, "shunt_a": 1.28}},
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: tt.ops}
			s, err := New("adc", bus, 0x48, Opts{Chip: tt.chip, Channels: tt.chans})
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if err != nil || fmt.Sprint(v) != fmt.Sprint(tt.want) {
				t.Fatalf("%s: Read = %v, %v; want %v", tt.name, v, err, tt.want)
			}
			if s.Kind() != tt.chip {
				t.Errorf("Kind = %s", s.Kind())
			}
			if err := bus.Close(); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	tests := []struct {
		name  string
		chip  string
		ops   []i2ctest.IO
		want  error
		msg   string
		class fault.Class
	}{
		{"ads1115 positive full scale", "ads1115", convOps(0x48, 0xC383, 0, 0, 0x7FFF), ErrSaturated, "channel 0 (ain0_v): code 0x7fff: input beyond full scale", fault.OutOfRange},
		{"ads1015 positive full scale", "ads1015", convOps(0x48, 0xC303, 0, 0, 0x7FF0), ErrSaturated, "code 0x7ff0", fault.OutOfRange},
		{"negative full scale", "ads1115", convOps(0x48, 0xC383, 0, 0, 0x8000), ErrSaturated, "code 0x8000", fault.OutOfRange},
		{"never done", "ads1115", convOps(0x48, 0xC383, 0, busyPolls+1, 0)[:2+busyPolls+1], ErrBusy, "after 4 checks, config 0x4383", fault.Timeout},
		{"NACK", "ads1115", nil, ErrBus, "convert", fault.Other},
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: tt.ops, DontPanic: true}
			s, err := New("adc", bus, 0x48, Opts{Chip: tt.chip, Channels: []Channel{{Input: "0"}}})
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if v != nil || !errors.Is(err, tt.want) || fault.Of(err) != tt.class || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("%s: Read = %v, %v (%s); want %v containing %q (%s)", tt.name, v, err, fault.Of(err), tt.want, tt.msg, tt.class)
			}
			if err := bus.Close(); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		})
	}
}

func TestCheckChannels(t *testing.T) {
	tests := []struct {
		chans []Channel
		want  string
	}{
		{[]Channel{{Input: "0"}, {Input: "0", Field: "soil", Unit: "pct"}}, ""},
		{nil, "channels: at least one is needed"},
		{[]Channel{{Input: "4"}}, `channels[0].input "4" is not`},
		{[]Channel{{Input: "1-0"}}, `channels[0].input "1-0"`},
		{[]Channel{{Input: "0", FullScaleV: 5}}, "channels[0].full_scale_v 5 is not one of [6.144 4.096 2.048 1.024 0.512 0.256]"},
		{[]Channel{{Input: "0", Field: "Soil Moisture"}}, `channels[0].field "Soil Moisture"`},
		{[]Channel{{Input: "0", Unit: "%"}}, `channels[0].unit "%"`},
		{[]Channel{{Input: "0"}, {Input: "1", Field: "ain0"}}, `channels[1] has the value key "ain0_v" of channels[0]`},
	}
	for _, tt := range tests {
		err := CheckChannels(tt.chans)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckChannels(%+v) = %v, want %q", tt.chans, err, tt.want)
		}
	}
}

// TestChannelYAML: inputs written as numbers in YAML (input: 0) are the
// strings the table expects.
func TestChannelYAML(t *testing.T) {
	var cs []Channel
	if err := yaml.Unmarshal([]byte(`[{input: 0, field: soil, unit: pct, scale: -62.5, offset: 175}, {input: "0-1"}]`), &cs); err != nil {
		t.Fatal(err)
	}
	if cs[0].Input != "0" || cs[0].Key() != "soil_pct" || cs[0].Scale != -62.5 || cs[1].Key() != "ain0_1_v" {
		t.Fatalf("decoded %+v", cs)
	}
}

func TestProbe(t *testing.T) {
	for _, tt := range []struct {
		lo, hi uint16
		ok     bool
	}{{0x8000, 0x7FFF, true}, {0x0000, 0x7FFF, false}} {
		bus := &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: 0x49, W: []byte{0x02}, R: be(tt.lo)}, {Addr: 0x49, W: []byte{0x03}, R: be(tt.hi)}}}
		kind, err := Probe(bus, 0x49)
		if (err == nil) != tt.ok || (tt.ok && kind != "ads1x15") || (!tt.ok && !errors.Is(err, ErrWrongChip)) {
			t.Errorf("Probe(%04x, %04x) = %q, %v", tt.lo, tt.hi, kind, err)
		}
		if err := bus.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
