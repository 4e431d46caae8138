package aht20

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Status bytes: calibrated and idle (0x1C is what chips report after
// power-up), busy, and uncalibrated (after a brown-out reset).
const (
	stReady        = 0x1C
	stBusy         = 0x9C
	stUncalibrated = 0x10
)

// frame is what the chip sends after a measurement (datasheet 5.4 step 4):
// status, 20 bits of humidity, 20 bits of temperature, CRC-8 of the six.
func frame(status byte, hRaw, tRaw uint32) []byte {
	f := []byte{status, byte(hRaw >> 12), byte(hRaw >> 4), byte(hRaw<<4) | byte(tRaw>>16&0x0F), byte(tRaw >> 8), byte(tRaw)}
	return append(f, i2cbus.CRC8(f))
}

// openOps is New's traffic: periph reads the status and initialises an
// uncalibrated chip (0xBE 0x08 0x00), then we read the status again.
func openOps(first, after byte) []i2ctest.IO {
	ops := []i2ctest.IO{{Addr: Addr, W: []byte{cmdStatus}, R: []byte{first}}}
	if first&bitCalibrated == 0 {
		ops = append(ops, i2ctest.IO{Addr: Addr, W: []byte{0xBE, 0x08, 0x00}})
	}
	return append(ops, i2ctest.IO{Addr: Addr, W: []byte{cmdStatus}, R: []byte{after}})
}

// readOps is one Read: trigger, then one 7-byte read per frame (periph
// polls every 10 ms while the busy bit is set).
func readOps(frames ...[]byte) []i2ctest.IO {
	ops := []i2ctest.IO{{Addr: Addr, W: []byte{0xAC, 0x33, 0x00}}}
	for _, f := range frames {
		ops = append(ops, i2ctest.IO{Addr: Addr, R: f})
	}
	return ops
}

func concat(parts ...[]i2ctest.IO) []i2ctest.IO {
	var out []i2ctest.IO
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestReadDatasheetFormulas checks the conversion of datasheet section 6:
// RH = S_RH / 2^20 * 100 %, T = S_T / 2^20 * 200 - 50 °C, on worked
// examples, through periph's driver, the busy path and re-calibration.
func TestReadDatasheetFormulas(t *testing.T) {
	tests := []struct {
		name       string
		open       []i2ctest.IO
		frames     [][]byte
		wantT      float64
		wantH      float64
		wantOpenTx int
	}{
		// 0x80000 / 2^20 * 100 = 50 %; 0x66666 / 2^20 * 200 - 50 = 29.99996 °C.
		{"mid-scale", openOps(stReady, stReady), [][]byte{frame(stReady, 0x80000, 0x66666)}, 30.00, 50.00, 2},
		// 0x5999A -> 35.0002 %; 0x4CCCD -> 10.0001 °C.
		{"uncalibrated chip is initialised", openOps(stUncalibrated, stReady), [][]byte{frame(stReady, 0x5999A, 0x4CCCD)}, 10.00, 35.00, 3},
		// 0 -> 0 %RH; 0x33333 -> -10.0001 °C. Busy twice, then ready.
		{"busy, then ready", openOps(stReady, stReady), [][]byte{frame(stBusy, 1, 1), frame(stBusy, 1, 1), frame(stReady, 0, 0x33333)}, -10.00, 0, 2},
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: concat(tt.open, readOps(tt.frames...)), DontPanic: true}
			s, err := New("aht", bus)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			v, err := s.Read(context.Background())
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if v["temperature_c"] != tt.wantT || v["humidity_pct"] != tt.wantH || len(v) != 2 {
				t.Errorf("%s: Read = %v, want temperature_c %v humidity_pct %v", tt.name, v, tt.wantT, tt.wantH)
			}
			if s.Kind() != "aht20" || s.Name() != "aht" {
				t.Errorf("Kind/Name = %s/%s", s.Kind(), s.Name())
			}
			if err := bus.Close(); err != nil { // every recorded transaction used
				t.Fatalf("%s: %v", tt.name, err)
			}
		})
	}
}

// busyFrames is a measurement that never finishes: periph reads at
// 80 ms + 0, 10, ... 140 ms and gives up at 150 ms.
func busyFrames() [][]byte {
	var fs [][]byte
	for range 15 {
		fs = append(fs, frame(stBusy, 1, 1))
	}
	return fs
}

func TestReadErrors(t *testing.T) {
	bad := frame(stReady, 0x80000, 0x66666)
	bad[6] ^= 0x01
	tests := []struct {
		name  string
		read  []i2ctest.IO
		want  error
		msg   string
		class fault.Class
	}{
		{"CRC mismatch", readOps(bad), ErrCRC, "measure: CRC mismatch", fault.CRC},
		{"busy past the timeout", readOps(busyFrames()...), ErrBusy, "measurement still busy", fault.Timeout},
		{"chip lost its calibration", readOps(frame(stUncalibrated, 0x80000, 0x66666)), ErrNotCalibrated, "not calibrated", fault.PowerOn},
		// 0xFFFFF -> 149.9998 °C: beyond the 85 °C the datasheet allows.
		{"too hot", readOps(frame(stReady, 0x80000, 0xFFFFF)), ErrOutOfRange, "temperature 150.00 °C", fault.OutOfRange},
		{"NACK mid-read", readOps()[:1], ErrBus, "measure", fault.Other},
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: concat(openOps(stReady, stReady), tt.read), DontPanic: true}
			s, err := New("aht", bus)
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if v != nil || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("%s: Read = %v, %v; want %v containing %q", tt.name, v, err, tt.want, tt.msg)
			}
			if c := fault.Of(err); c != tt.class {
				t.Fatalf("%s: class %q, want %q", tt.name, c, tt.class)
			}
			if err := bus.Close(); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		})
	}
}

// TestRecalibratesAfterReset: a chip that reports itself uncalibrated in a
// measurement (reset by a brown-out) is initialised on the next Read.
func TestRecalibratesAfterReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := &i2ctest.Playback{Ops: concat(
			openOps(stReady, stReady),
			readOps(frame(stUncalibrated, 0, 0)),
			openOps(stUncalibrated, stReady),
			readOps(frame(stReady, 0x80000, 0x66666)),
		)}
		s, err := New("aht", bus)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Read(context.Background()); !errors.Is(err, ErrNotCalibrated) {
			t.Fatalf("first Read = %v", err)
		}
		if v, err := s.Read(context.Background()); err != nil || v["temperature_c"] != 30 {
			t.Fatalf("second Read = %v, %v", v, err)
		}
		if err := bus.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name  string
		ops   []i2ctest.IO
		want  error
		class fault.Class
	}{
		{"calibration does not stick", openOps(stUncalibrated, stUncalibrated), ErrNotCalibrated, fault.PowerOn},
		{"nothing answers", nil, ErrBus, fault.Other},
	}
	for _, tt := range tests {
		bus := &i2ctest.Playback{Ops: tt.ops, DontPanic: true}
		synctest.Test(t, func(t *testing.T) {
			_, err := New("aht", bus)
			if !errors.Is(err, tt.want) || fault.Of(err) != tt.class || !strings.Contains(err.Error(), "aht20 playback addr 0x38") {
				t.Fatalf("%s: New = %v (%s), want %v (%s)", tt.name, err, fault.Of(err), tt.want, tt.class)
			}
		})
		if err := bus.Close(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name string
		f    []byte
		ok   bool
	}{
		{"aht20", frame(stReady, 0x80000, 0x66666), true},
		{"CRC off: another chip", append(frame(stReady, 0x80000, 0x66666)[:6], 0x00), false},
		{"uncalibrated", frame(stUncalibrated, 0, 0), false},
		{"PCF8574A: port pins, no CRC", []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, false},
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			// A plain read: no write that could drive another chip's pins.
			bus := &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: Addr, R: tt.f}}}
			kind, err := Probe(bus, Addr)
			if (err == nil) != tt.ok || (tt.ok && kind != "aht20") || (!tt.ok && !errors.Is(err, ErrWrongChip)) {
				t.Fatalf("%s: Probe = %q, %v", tt.name, kind, err)
			}
			if err := bus.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReadCanceled(t *testing.T) {
	bus := &i2ctest.Playback{Ops: openOps(stReady, stReady)}
	s, err := New("aht", bus)
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
