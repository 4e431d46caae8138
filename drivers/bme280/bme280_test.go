package bme280

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"
	"testing"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// calib holds the trimming parameters as the datasheet names them.
type calib struct {
	T1         uint16
	T2, T3     int16
	P1         uint16
	P2, P3, P4 int16
	P5, P6, P7 int16
	P8, P9     int16
	H1         uint8
	H2         int16
	H3         uint8
	H4, H5     int16
	H6         int8
}

// datasheetCalib is the BMP280 datasheet's compensation example (section
// 3.12 / table in 8.2) plus humidity parameters in a typical BME280 range.
var datasheetCalib = calib{
	T1: 27504, T2: 26435, T3: -1000,
	P1: 36477, P2: -10685, P3: 3024, P4: 2855, P5: 140, P6: -7, P7: 15500, P8: -14600, P9: 6000,
	H1: 75, H2: 362, H3: 0, H4: 324, H5: 50, H6: 30,
}

// Datasheet example ADC values: T = 25.08 °C, p = 100653.27 Pa.
const (
	adcT = 519888
	adcP = 415148
	adcH = 27264 // no datasheet example; checked against compensateFloat
)

// regs0x88 is the 26-byte block 0x88..0xA1 (T1..P9 little endian, reserved, H1).
func (c calib) regs0x88() []byte {
	b := make([]byte, 26)
	for i, v := range []uint16{c.T1, uint16(c.T2), uint16(c.T3), c.P1, uint16(c.P2), uint16(c.P3),
		uint16(c.P4), uint16(c.P5), uint16(c.P6), uint16(c.P7), uint16(c.P8), uint16(c.P9)} {
		binary.LittleEndian.PutUint16(b[2*i:], v)
	}
	b[25] = c.H1
	return b
}

// regs0xE1 is the 7-byte block 0xE1..0xE7 with H4/H5 packed as 12-bit values.
func (c calib) regs0xE1() []byte {
	b := make([]byte, 7)
	binary.LittleEndian.PutUint16(b, uint16(c.H2))
	b[2] = c.H3
	b[3] = byte(c.H4 >> 4)
	b[4] = byte(c.H4&0xF) | byte(c.H5&0xF)<<4
	b[5] = byte(c.H5 >> 4)
	b[6] = byte(c.H6)
	return b
}

// measurement is registers 0xF7..0xFE (pressure, temperature: 20 bits; humidity: 16).
func measurement(p, t, h int) []byte {
	return []byte{byte(p >> 12), byte(p >> 4), byte(p<<4) & 0xF0, byte(t >> 12), byte(t >> 4), byte(t<<4) & 0xF0, byte(h >> 8), byte(h)}
}

// compensateFloat is the datasheet's floating-point compensation (BME280
// datasheet 8.1), written independently of periph's integer code.
func compensateFloat(c calib, adcT, adcP, adcH float64) (t, p, h float64) {
	v1 := (adcT/16384 - float64(c.T1)/1024) * float64(c.T2)
	v2 := (adcT/131072 - float64(c.T1)/8192) * (adcT/131072 - float64(c.T1)/8192) * float64(c.T3)
	tFine := v1 + v2
	t = tFine / 5120

	v1 = tFine/2 - 64000
	v2 = v1 * v1 * float64(c.P6) / 32768
	v2 += v1 * float64(c.P5) * 2
	v2 = v2/4 + float64(c.P4)*65536
	v1 = (float64(c.P3)*v1*v1/524288 + float64(c.P2)*v1) / 524288
	v1 = (1 + v1/32768) * float64(c.P1)
	p = 1048576 - adcP
	p = (p - v2/4096) * 6250 / v1
	v1 = float64(c.P9) * p * p / 2147483648
	v2 = p * float64(c.P8) / 32768
	p += (v1 + v2 + float64(c.P7)) / 16

	x := tFine - 76800
	x = (adcH - (float64(c.H4)*64 + float64(c.H5)/16384*x)) *
		(float64(c.H2) / 65536 * (1 + float64(c.H6)/67108864*x*(1+float64(c.H3)/67108864*x)))
	h = x * (1 - float64(c.H1)*x/524288)
	return t, p, math.Max(0, math.Min(100, h))
}

const addr = 0x76

// openOps is the traffic of New: our chip id probe, then bmxx80's chip id,
// calibration and configuration (sleep mode, oversampling osrs).
func openOps(chipID byte, c calib, osrs byte) []i2ctest.IO {
	ops := []i2ctest.IO{
		{Addr: addr, W: []byte{0xD0}, R: []byte{chipID}},
		{Addr: addr, W: []byte{0xD0}, R: []byte{chipID}},
		{Addr: addr, W: []byte{0x88}, R: c.regs0x88()},
	}
	meas := osrs<<5 | osrs<<2 // ctrl_meas, sleep mode
	if chipID == ChipIDBME280 {
		ops = append(ops,
			i2ctest.IO{Addr: addr, W: []byte{0xE1}, R: c.regs0xE1()},
			i2ctest.IO{Addr: addr, W: []byte{0xF4, meas, 0xF2, osrs, 0xF5, 5 << 5, 0xF4, meas}})
	} else {
		ops = append(ops, i2ctest.IO{Addr: addr, W: []byte{0xF4, meas, 0xF5, 5 << 5, 0xF4, meas}})
	}
	return ops
}

// readOps is the traffic of one Read: forced mode, status idle, data.
func readOps(chipID byte, osrs byte, data []byte) []i2ctest.IO {
	if chipID != ChipIDBME280 {
		data = data[:6]
	}
	return []i2ctest.IO{
		{Addr: addr, W: []byte{0xF4, osrs<<5 | osrs<<2 | 1}},
		{Addr: addr, W: []byte{0xF3}, R: []byte{0x00}},
		{Addr: addr, W: []byte{0xF7}, R: data},
	}
}

func concat(parts ...[]i2ctest.IO) []i2ctest.IO {
	var out []i2ctest.IO
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestReadDatasheetExample(t *testing.T) {
	wantT, wantP, wantH := compensateFloat(datasheetCalib, adcT, adcP, adcH)
	tests := []struct {
		name     string
		chipID   byte
		opts     Opts
		osrs     byte
		filterOp []i2ctest.IO
		kind     string
	}{
		{"bme280 default", ChipIDBME280, Opts{}, 3, nil, "bme280"},
		{"bme280 16x filter 4", ChipIDBME280, Opts{Oversampling: 16, Filter: 4}, 5,
			[]i2ctest.IO{{Addr: addr, W: []byte{0xF5, 5<<5 | 2<<2}}}, "bme280"},
		{"bmp280 1x", ChipIDBMP280, Opts{Oversampling: 1}, 1, nil, "bmp280"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: concat(
				openOps(tt.chipID, datasheetCalib, tt.osrs),
				tt.filterOp,
				readOps(tt.chipID, tt.osrs, measurement(adcP, adcT, adcH)),
				readOps(tt.chipID, tt.osrs, measurement(adcP, adcT, adcH)),
			), DontPanic: true}
			s, err := New("bme", bus, addr, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if s.Kind() != tt.kind || s.Name() != "bme" {
				t.Fatalf("Kind/Name = %s/%s", s.Kind(), s.Name())
			}
			for range 2 {
				v, err := s.Read(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				// Datasheet: T = 25.08 °C, p = 100653.27 Pa.
				if v["temperature_c"] != 25.08 {
					t.Errorf("temperature_c = %v, want 25.08 (datasheet)", v["temperature_c"])
				}
				if math.Abs(v["pressure_hpa"]-1006.5327) > 0.005 {
					t.Errorf("pressure_hpa = %v, want 1006.53 (datasheet 100653.27 Pa)", v["pressure_hpa"])
				}
				if math.Abs(v["temperature_c"]-wantT) > 0.01 || math.Abs(v["pressure_hpa"]-wantP/100) > 0.01 {
					t.Errorf("got %v, float formulas give T %.3f p %.3f", v, wantT, wantP/100)
				}
				h, ok := v["humidity_pct"]
				switch {
				case tt.kind == "bmp280" && ok:
					t.Errorf("bmp280 returned humidity %v", h)
				case tt.kind == "bme280" && math.Abs(h-wantH) > 0.02:
					t.Errorf("humidity_pct = %v, float formula gives %.3f", h, wantH)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// Fails if a recorded transaction was not used.
			if err := bus.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// failBus is an I2C bus whose every transaction fails the way periph's
// Linux bus reports it ("sysfs-i2c: <errno text>").
type failBus struct{ errno syscall.Errno }

func (f failBus) String() string                  { return "I2C1" }
func (f failBus) Tx(uint16, []byte, []byte) error { return fmt.Errorf("sysfs-i2c: %v", f.errno) }
func (f failBus) SetSpeed(physic.Frequency) error { return nil }

var _ i2c.Bus = failBus{}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name  string
		bus   i2c.Bus
		want  error
		msg   string
		class fault.Class // of the error, for the agent's health
	}{
		{"missing chip (NACK)", failBus{syscall.EREMOTEIO}, ErrNoDevice, "bme280 I2C1 addr 0x76: read chip id: no device answered", fault.Absent},
		{"nothing at address", failBus{syscall.ENXIO}, ErrNoDevice, "no device answered", fault.Absent},
		{"bus stuck", failBus{syscall.ETIMEDOUT}, ErrBus, "I2C bus error: sysfs-i2c: connection timed out", fault.Timeout},
		{"wrong chip id", &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: addr, W: []byte{0xD0}, R: []byte{0x61}}}}, ErrWrongChip, "chip id 0x61 is a BME680", fault.Absent},
		{"unknown chip id", &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: addr, W: []byte{0xD0}, R: []byte{0xFF}}}}, ErrWrongChip, "chip id 0xff (want 0x60 BME280 or 0x58 BMP280)", fault.Absent},
		{"calibration read fails", &i2ctest.Playback{Ops: openOps(ChipIDBME280, datasheetCalib, 3)[:2], DontPanic: true}, ErrBus, "bme280 playback addr 0x76: init", fault.Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New("bme", tt.bus, addr, Opts{})
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v\nwant %v containing %q", err, tt.want, tt.msg)
			}
			if c := fault.Of(err); c != tt.class {
				t.Fatalf("fault.Of(%v) = %q, want %q", err, c, tt.class)
			}
			if pb, ok := tt.bus.(*i2ctest.Playback); ok {
				if err := pb.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	tests := []struct {
		name  string
		read  []i2ctest.IO
		want  error
		msg   string
		class fault.Class // of the error, for the agent's health
	}{
		{"bus error mid-measurement", readOps(ChipIDBME280, 3, measurement(adcP, adcT, adcH))[:1], ErrBus, "measure", fault.Other},
		// 0xFFFFF compensates to about 187 °C: a corrupted transfer.
		{"temperature out of range", readOps(ChipIDBME280, 3, measurement(adcP, 0xFFFFF, adcH)), ErrOutOfRange, "temperature 187", fault.OutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: concat(openOps(ChipIDBME280, datasheetCalib, 3), tt.read), DontPanic: true}
			s, err := New("bme", bus, addr, Opts{})
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if v != nil || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Read = %v, %v; want %v containing %q", v, err, tt.want, tt.msg)
			}
			if c := fault.Of(err); c != tt.class {
				t.Fatalf("fault.Of(%v) = %q, want %q", err, c, tt.class)
			}
			if err := bus.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReadCanceled(t *testing.T) {
	bus := &i2ctest.Playback{Ops: openOps(ChipIDBME280, datasheetCalib, 3)}
	s, err := New("bme", bus, addr, Opts{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read = %v", err)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPlaybackCatchesMissingTraffic shows the other tests' bus.Close()
// check has teeth: a recorded measurement that the driver never asked for
// makes Close fail.
func TestPlaybackCatchesMissingTraffic(t *testing.T) {
	bus := &i2ctest.Playback{Ops: concat(
		openOps(ChipIDBME280, datasheetCalib, 3),
		readOps(ChipIDBME280, 3, measurement(adcP, adcT, adcH)),
	), DontPanic: true}
	s, err := New("bme", bus, addr, Opts{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := bus.Close(); err == nil {
		t.Fatal("Close succeeded with three recorded transactions unused")
	}
}
