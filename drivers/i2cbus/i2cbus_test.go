package i2cbus

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

// TestCRC8 checks the datasheets' examples: Sensirion's SCD4x datasheet
// (CRC section) gives CRC(0xBEEF) = 0x92; the SCD4x's own examples
// (set_temperature_offset, 0x07E6 -> 0x48) and the CRC of an empty frame
// (the initial value).
func TestCRC8(t *testing.T) {
	tests := []struct {
		in   []byte
		want byte
	}{
		{[]byte{0xBE, 0xEF}, 0x92},
		{[]byte{0x07, 0xE6}, 0x48},
		{nil, 0xFF},
	}
	for _, tt := range tests {
		if got := CRC8(tt.in); got != tt.want {
			t.Errorf("CRC8(% x) = 0x%02x, want 0x%02x", tt.in, got, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err   error
		want  error
		class fault.Class
	}{
		{fmt.Errorf("sysfs-i2c: %v", syscall.EREMOTEIO), ErrNoDevice, fault.Absent},
		{fmt.Errorf("sysfs-i2c: %v", syscall.ENXIO), ErrNoDevice, fault.Absent},
		{syscall.ENXIO, ErrNoDevice, fault.Absent},
		{fmt.Errorf("sysfs-i2c: %v", syscall.ETIMEDOUT), ErrBus, fault.Timeout},
		{errors.New("sysfs-i2c: something else"), ErrBus, fault.Other},
	}
	for _, tt := range tests {
		got := Classify(tt.err)
		if !errors.Is(got, tt.want) || fault.Of(got) != tt.class {
			t.Errorf("Classify(%v) = %v (%s), want %v (%s)", tt.err, got, fault.Of(got), tt.want, tt.class)
		}
	}
}
