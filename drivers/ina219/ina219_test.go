package ina219

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// openOps: periph writes the calibration register (05h), then the
// configuration register (00h) = 0x1FFF.
func openOps(addr uint16, cal uint16) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: addr, W: []byte{0x05, byte(cal >> 8), byte(cal)}},
		{Addr: addr, W: []byte{0x00, 0x1F, 0xFF}},
	}
}

// readOps: periph reads shunt voltage (01h), bus voltage (02h), current
// (04h) and power (03h), each a big-endian 16-bit register.
func readOps(addr uint16, shunt, bus, current, power uint16) []i2ctest.IO {
	reg := func(r byte, v uint16) i2ctest.IO {
		return i2ctest.IO{Addr: addr, W: []byte{r}, R: []byte{byte(v >> 8), byte(v)}}
	}
	return []i2ctest.IO{reg(0x01, shunt), reg(0x02, bus), reg(0x04, current), reg(0x03, power)}
}

func concat(parts ...[]i2ctest.IO) []i2ctest.IO {
	var out []i2ctest.IO
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestReadDatasheetExample follows the datasheet's calibration example
// (INA219 datasheet 8.5.1, "Programming the Calibration Register"): a
// 0.1 Ω shunt and a current LSB of 100 µA (max_current_a = 100 µA x
// 32768 = 3.2768 A) give Cal = trunc(0.04096 / (0.0001 x 0.1)) = 4096 and
// a power LSB of 20 x 100 µA = 2 mW. Then 0.4 A at 12 V:
// shunt register 4000 (x 10 µV = 40 mV), current register
// 4000 x 4096 / 4096 = 4000 (x 100 µA = 0.4 A, equation 4), bus register
// 3000 << 3 (x 4 mV = 12 V) with CNVR set, power register
// 4000 x 3000 / 5000 = 2400 (x 2 mW = 4.8 W, equation 5).
func TestReadDatasheetExample(t *testing.T) {
	tests := []struct {
		name string
		addr uint16
		opts Opts
		cal  uint16
		regs [4]uint16 // shunt, bus, current, power
		want map[string]float64
	}{
		{"datasheet example", 0x40, Opts{ShuntOhms: 0.1, MaxCurrentA: 3.2768}, 4096,
			[4]uint16{4000, 3000<<3 | 0x2, 4000, 2400}, map[string]float64{"voltage_v": 12, "current_a": 0.4, "power_w": 4.8}},
		// Defaults: 3.2 A / 32768 = 97.656 µA (periph truncates to whole nA:
		// 97 656 nA), Cal = 0.04096 / (97.656 µA x 0.1 Ω) = 4194 = 0x1062.
		// Reverse current: register -1000 -> -97.656 mA; 5 V; power LSB 20 x
		// 97.65625 µA = 1.953125 mW (periph rounds it from 20 x 3.2 A / 32768), x 500.
		{"defaults, reverse current", 0x45, Opts{}, 0x1062,
			[4]uint16{0xFC18, 1250 << 3, 0xFC18, 500}, map[string]float64{"voltage_v": 5, "current_a": -0.097656, "power_w": 0.976563}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: concat(openOps(tt.addr, tt.cal), readOps(tt.addr, tt.regs[0], tt.regs[1], tt.regs[2], tt.regs[3]))}
			s, err := New("ina", bus, tt.addr, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if err != nil || fmt.Sprint(v) != fmt.Sprint(tt.want) {
				t.Fatalf("Read = %v, %v; want %v", v, err, tt.want)
			}
			if s.Kind() != "ina219" || s.Close() != nil {
				t.Fatal("Kind/Close")
			}
			if err := bus.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	tests := []struct {
		name  string
		read  []i2ctest.IO
		want  error
		class fault.Class
	}{
		// OVF (bit 0 of the bus voltage register): periph stops there.
		{"overflow", readOps(Addr, 0x7FFF, 3000<<3|0x3, 0, 0)[:2], ErrOverflow, fault.OutOfRange},
		// 0xFFF8 >> 3 = 8191 x 4 mV = 32.76 V: not a voltage the chip measures.
		{"bus voltage beyond 26 V", readOps(Addr, 0, 0xFFF8, 0, 0), ErrOutOfRange, fault.OutOfRange},
		{"bus error", readOps(Addr, 0, 0, 0, 0)[:1], ErrBus, fault.Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: concat(openOps(Addr, 0x1062), tt.read), DontPanic: true}
			s, err := New("ina", bus, Addr, DefaultOpts)
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if v != nil || !errors.Is(err, tt.want) || fault.Of(err) != tt.class || !strings.Contains(err.Error(), "ina219 playback addr 0x40") {
				t.Fatalf("Read = %v, %v (%s); want %v (%s)", v, err, fault.Of(err), tt.want, tt.class)
			}
			if err := bus.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCheckOpts(t *testing.T) {
	tests := []struct {
		opts Opts
		want string
	}{
		{DefaultOpts, ""},
		{Opts{ShuntOhms: 0.01, MaxCurrentA: 10}, ""},
		{Opts{ShuntOhms: 0, MaxCurrentA: 1}, "shunt_ohms 0 is not a positive resistance"},
		{Opts{ShuntOhms: 0.1, MaxCurrentA: -1}, "max_current_a -1 is not a positive current"},
		{Opts{ShuntOhms: 0.1, MaxCurrentA: 5}, "beyond the INA219's ±0.32 V shunt range"},
		{Opts{ShuntOhms: 0.1, MaxCurrentA: 0.2}, "calibration register overflows"},
	}
	for _, tt := range tests {
		err := CheckOpts(tt.opts)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckOpts(%+v) = %v, want %q", tt.opts, err, tt.want)
		}
	}
}

func TestProbe(t *testing.T) {
	for _, tt := range []struct {
		config uint16
		ok     bool
	}{{0x399F, true}, {0x1FFF, true}, {0x1104, false}} {
		bus := &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: 0x41, W: []byte{0x00}, R: []byte{byte(tt.config >> 8), byte(tt.config)}}}}
		kind, err := Probe(bus, 0x41)
		if (err == nil) != tt.ok || (tt.ok && kind != "ina219") || (!tt.ok && !errors.Is(err, ErrWrongChip)) {
			t.Errorf("Probe with config 0x%04x = %q, %v", tt.config, kind, err)
		}
		if err := bus.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
