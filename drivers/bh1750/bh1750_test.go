package bh1750

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// openOps: periph's NewI2C (0x07 reset, 0x10 continuous H-resolution,
// 0x07 reset), then our mode.
func openOps(addr uint16, mode byte) []i2ctest.IO {
	return []i2ctest.IO{{Addr: addr, W: []byte{0x07}}, {Addr: addr, W: []byte{0x10}}, {Addr: addr, W: []byte{0x07}}, {Addr: addr, W: []byte{mode}}}
}

// readOps: one Read: the mode again, then the two-byte count.
func readOps(addr uint16, mode byte, count uint16) []i2ctest.IO {
	return []i2ctest.IO{{Addr: addr, W: []byte{mode}}, {Addr: addr, R: []byte{byte(count >> 8), byte(count)}}}
}

func concat(parts ...[]i2ctest.IO) []i2ctest.IO {
	var out []i2ctest.IO
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestReadDatasheetExample: the datasheet's example count (BH1750FVI,
// "Measurement sequence example", ex1) 1000_0011_1001_0000b = 33680 is
// 33680 / 1.2 = 28067 lx in H-resolution mode; H-resolution mode2
// halves it (0.5 lx steps), L-resolution converts like H-resolution.
func TestReadDatasheetExample(t *testing.T) {
	tests := []struct {
		res   string
		addr  uint16
		mode  byte
		count uint16
		want  float64
		wait  time.Duration
	}{
		{"high", Addr, 0x10, 0b1000_0011_1001_0000, 28066.67, 180 * time.Millisecond},
		{"high2", Addr, 0x11, 0b1000_0011_1001_0000, 14033.33, 180 * time.Millisecond},
		{"low", AddrAlt, 0x13, 0b1000_0011_1001_0000, 28066.67, 24 * time.Millisecond},
		// One count in mode2 is 0.42 lx: periph's Sense would say 0.
		{"high2", Addr, 0x11, 1, 0.42, 180 * time.Millisecond},
		{"", Addr, 0x10, 0, 0, 180 * time.Millisecond}, // default: high
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: concat(openOps(tt.addr, tt.mode), readOps(tt.addr, tt.mode, tt.count), []i2ctest.IO{{Addr: tt.addr, W: []byte{0x00}}})}
			s, err := New("lux", bus, tt.addr, Opts{Resolution: tt.res})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			v, err := s.Read(context.Background())
			if err != nil || len(v) != 1 || v["illuminance_lux"] != tt.want {
				t.Fatalf("%s count %d: Read = %v, %v; want %v lx", tt.res, tt.count, v, err, tt.want)
			}
			if w := time.Since(start); w != tt.wait {
				t.Errorf("%s: waited %v, want the datasheet's maximum %v", tt.res, w, tt.wait)
			}
			if err := s.Close(); err != nil { // powers down: 0x00
				t.Fatal(err)
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
		ctx   time.Duration // read deadline; 0: none
		want  error
		class fault.Class
	}{
		{"saturated", readOps(Addr, 0x10, 0xFFFF), 0, ErrSaturated, fault.OutOfRange},
		{"NACK", nil, 0, ErrBus, fault.Other},
		{"deadline before the measurement ends", readOps(Addr, 0x10, 0)[:1], 100 * time.Millisecond, context.DeadlineExceeded, fault.Timeout},
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: concat(openOps(Addr, 0x10), tt.read), DontPanic: true}
			s, err := New("lux", bus, Addr, DefaultOpts)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			v, err := s.Read(ctx)
			if v != nil || !errors.Is(err, tt.want) || fault.Of(err) != tt.class || !strings.Contains(err.Error(), "bh1750 playback addr 0x23") {
				t.Fatalf("%s: Read = %v, %v (%s); want %v (%s)", tt.name, v, err, fault.Of(err), tt.want, tt.class)
			}
			if err := bus.Close(); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	bus := &i2ctest.Playback{Ops: openOps(Addr, 0x10)[:3], DontPanic: true}
	if _, err := New("lux", bus, Addr, Opts{Resolution: "ultra"}); err == nil || !strings.Contains(err.Error(), `resolution "ultra" is not high, high2 or low`) {
		t.Fatalf("New with a bad resolution = %v", err)
	}
	if err := bus.Close(); err == nil {
		t.Fatal("a bad resolution touched the bus")
	}
}
