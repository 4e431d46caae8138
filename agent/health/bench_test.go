package health_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// BenchmarkGood is what a good poll adds to the poll loop.
func BenchmarkGood(b *testing.B) {
	var board health.Board
	board.Track([]string{"a", "b", "c", "d"})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		board.Good("b", now)
	}
}

// BenchmarkFail is what a failed poll adds (class lookup, message copy).
func BenchmarkFail(b *testing.B) {
	var board health.Board
	board.Track([]string{"a", "b", "c", "d"})
	err := fmt.Errorf("ds18b20 b: %w", fault.New(fault.CRC, "CRC check failed"))
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		board.Fail("b", now, err)
	}
}

// BenchmarkStatusSensors: the snapshot and JSON of four sensors, one
// failing, as the status message carries them; reports the bytes.
func BenchmarkStatusSensors(b *testing.B) {
	var board health.Board
	names := []string{"bme280-0x76", "dht22-gpio4", "ds18b20-1", "sim-1"}
	board.Track(names)
	now := time.Date(2026, 11, 25, 10, 15, 2, 0, time.UTC)
	for _, n := range names {
		board.Good(n, now)
	}
	board.Fail("ds18b20-1", now, fmt.Errorf("ds18b20 ds18b20-1: /sys/bus/w1/devices/28-0316a2793aff/w1_slave: %w: %q",
		fault.New(fault.CRC, "CRC check failed"), "72 01 4b 46 7f ff 0e 10 57 : crc=a2 NO"))
	var n int
	b.ReportAllocs()
	for b.Loop() {
		s, _ := board.Snapshot()
		out, err := json.Marshal(s)
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.ReportMetric(float64(n), "bytes")
}
