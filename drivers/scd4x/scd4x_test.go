package scd4x

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"

	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// wakeNACK is the recorded bus plus what the datasheet says of wake_up
// (0x36F6): the sensor does not acknowledge it, so the bus reports a NACK.
type wakeNACK struct{ *i2ctest.Playback }

func (b wakeNACK) Tx(addr uint16, w, r []byte) error {
	if bytes.Equal(w, []byte{0x36, 0xF6}) {
		return fmt.Errorf("sysfs-i2c: %v", syscall.EREMOTEIO)
	}
	return b.Playback.Tx(addr, w, r)
}

// words is a Sensirion reply: each 16-bit word big endian and its CRC-8.
func words(ws ...uint16) []byte {
	var b []byte
	for _, w := range ws {
		b = append(b, byte(w>>8), byte(w), i2cbus.CRC8([]byte{byte(w >> 8), byte(w)}))
	}
	return b
}

// Data-ready words: the low 11 bits are 0 while nothing is ready.
const (
	notReady = 0x8000
	ready    = 0x8006
)

// startOps: periph's start after the unacknowledged wake_up:
// stop_periodic_measurement (0x3F86), 550 ms, start_periodic_measurement (0x21B1).
func startOps() []i2ctest.IO {
	return []i2ctest.IO{{Addr: Addr, W: []byte{0x3F, 0x86}}, {Addr: Addr, W: []byte{0x21, 0xB1}}}
}

// waitOps: our get_data_ready_status polls, n times not ready, then ready.
func waitOps(n int) []i2ctest.IO {
	var ops []i2ctest.IO
	for range n {
		ops = append(ops, i2ctest.IO{Addr: Addr, W: []byte{0xE4, 0xB8}, R: words(notReady)})
	}
	return append(ops, i2ctest.IO{Addr: Addr, W: []byte{0xE4, 0xB8}, R: words(ready)})
}

// senseOps: periph's Sense: data ready once more, then read_measurement
// (0xEC05): CO2, temperature, humidity words.
func senseOps(reply []byte) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: Addr, W: []byte{0xE4, 0xB8}, R: words(ready)},
		{Addr: Addr, W: []byte{0xEC, 0x05}, R: reply},
	}
}

var stopOp = []i2ctest.IO{{Addr: Addr, W: []byte{0x3F, 0x86}}}

func concat(parts ...[]i2ctest.IO) []i2ctest.IO {
	var out []i2ctest.IO
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestReadDatasheetExample replays the datasheet's read_measurement
// example (SCD4x datasheet 3.6.2): 0x01F4 0x33, 0x6667 0xA2, 0x5EB9 0x3C
// is CO2 = 500 ppm, T = -45 + 175 * 26215 / 65535 = 25.0 °C and
// RH = 100 * 24249 / 65535 = 37.0 %. The CRC bytes are the datasheet's
// too, which checks i2cbus.CRC8 against it.
func TestReadDatasheetExample(t *testing.T) {
	example := []byte{0x01, 0xF4, 0x33, 0x66, 0x67, 0xA2, 0x5E, 0xB9, 0x3C}
	if !bytes.Equal(example, words(0x01F4, 0x6667, 0x5EB9)) {
		t.Fatalf("words() = % x, datasheet % x", words(0x01F4, 0x6667, 0x5EB9), example)
	}
	tests := []struct {
		name     string
		notReady int // polls before data is ready
		reply    []byte
		want     map[string]float64
	}{
		{"datasheet example", 0, example, map[string]float64{"co2_ppm": 500, "temperature_c": 25, "humidity_pct": 37}},
		// 0x0000 -> -45 °C would be out of range; 0x3333 -> -10.0 °C, 0xFFFF -> 100 %RH.
		{"not ready twice, range ends", 2, words(40000, 0x3333, 0xFFFF), map[string]float64{"co2_ppm": 40000, "temperature_c": -10, "humidity_pct": 100}},
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			pb := &i2ctest.Playback{Ops: concat(startOps(), waitOps(tt.notReady), senseOps(tt.reply), stopOp)}
			s, err := New("scd", wakeNACK{pb})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			v, err := s.Read(context.Background())
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if fmt.Sprint(v) != fmt.Sprint(tt.want) {
				t.Errorf("%s: Read = %v, want %v", tt.name, v, tt.want)
			}
			if waited := time.Since(start); waited != time.Duration(tt.notReady)*pollEvery {
				t.Errorf("%s: waited %v for %d not-ready polls", tt.name, waited, tt.notReady)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := pb.Close(); err != nil { // every recorded transaction used
				t.Fatalf("%s: %v", tt.name, err)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	badReady := words(ready)
	badReady[2] ^= 0xFF
	badMeasure := words(500, 0x6667, 0x5EB9)
	badMeasure[5] ^= 0x01
	tests := []struct {
		name  string
		read  []i2ctest.IO
		want  error
		msg   string
		class fault.Class
	}{
		{"data-ready CRC", []i2ctest.IO{{Addr: Addr, W: []byte{0xE4, 0xB8}, R: badReady}}, ErrCRC, "get_data_ready_status: CRC mismatch", fault.CRC},
		{"measurement CRC (periph's check)", concat(waitOps(0), senseOps(badMeasure)), ErrCRC, "read_measurement: CRC mismatch: scd4x cmd 0xec05: invalid crc", fault.CRC},
		{"CO2 beyond 40000 ppm", concat(waitOps(0), senseOps(words(0xFFFF, 0x6667, 0x5EB9))), ErrOutOfRange, "CO2 65535 ppm", fault.OutOfRange},
		{"-45 °C", concat(waitOps(0), senseOps(words(500, 0, 0x5EB9))), ErrOutOfRange, "temperature -45.00 °C", fault.OutOfRange},
		{"bus error", nil, ErrBus, "get_data_ready_status", fault.Other},
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			pb := &i2ctest.Playback{Ops: concat(startOps(), tt.read), DontPanic: true}
			s, err := New("scd", wakeNACK{pb})
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
			if err := pb.Close(); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		})
	}
}

// TestNotReadyRestarts: a read whose deadline passes before data is ready
// fails with ErrNotReady (timeout); once no data came for MaxSilence, the
// next Read starts periodic measurement again and reads.
func TestNotReadyRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Measurement starts at 0.6 s (periph waits 550 + 50 ms).
		// 900 ms deadline: polls at 0, 250, 500, 750 ms, then the deadline.
		first := waitOps(4)[:4]
		// Second read, 5 s later: silence 5.9 s; it polls every 250 ms
		// until the silence exceeds 10 s: at 5.9, 6.15 .. 10.15 s, 18 polls.
		var second []i2ctest.IO
		for range 18 {
			second = append(second, waitOps(1)[0])
		}
		pb := &i2ctest.Playback{Ops: concat(startOps(), first, second, startOps(), waitOps(0), senseOps(words(800, 0x6667, 0x5EB9)))}
		s, err := New("scd", wakeNACK{pb})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 900*time.Millisecond)
		_, err = s.Read(ctx)
		cancel()
		if !errors.Is(err, ErrNotReady) || fault.Of(err) != fault.Timeout || !strings.Contains(err.Error(), "within the read's deadline") {
			t.Fatalf("first Read = %v", err)
		}
		time.Sleep(5 * time.Second)
		_, err = s.Read(context.Background())
		if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "restarting periodic measurement") {
			t.Fatalf("second Read = %v", err)
		}
		v, err := s.Read(context.Background())
		if err != nil || v["co2_ppm"] != 800 {
			t.Fatalf("Read after the restart = %v, %v", v, err)
		}
		if err := pb.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOpenNoDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, err := New("scd", failBus{})
		if !errors.Is(err, ErrNoDevice) || fault.Of(err) != fault.Absent || !strings.Contains(err.Error(), "scd4x I2C1 addr 0x62: start periodic measurement") {
			t.Fatalf("New = %v (%s)", err, fault.Of(err))
		}
	})
}

// failBus NACKs everything, as an empty address does.
type failBus struct{}

func (failBus) String() string { return "I2C1" }
func (failBus) Tx(uint16, []byte, []byte) error {
	return fmt.Errorf("sysfs-i2c: %v", syscall.ENXIO)
}
func (failBus) SetSpeed(physic.Frequency) error { return nil }

func TestProbe(t *testing.T) {
	bad := words(ready)
	bad[2]++
	tests := []struct {
		name string
		r    []byte
		want error
	}{
		{"scd4x", words(notReady), nil},
		{"no CRC: another chip", bad, ErrWrongChip},
	}
	for _, tt := range tests {
		pb := &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: Addr, W: []byte{0xE4, 0xB8}, R: tt.r}}}
		kind, err := Probe(pb, Addr)
		if !errors.Is(err, tt.want) || (err == nil && kind != "scd4x") {
			t.Errorf("%s: Probe = %q, %v", tt.name, kind, err)
		}
		if err := pb.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
