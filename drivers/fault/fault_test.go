package fault_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

var (
	errDriverCRC  = fault.New(fault.CRC, "driver A: CRC check failed")
	errDriverCRC2 = fault.New(fault.CRC, "driver B: bad checksum")
)

func TestOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want fault.Class
	}{
		{"nil", nil, ""},
		{"driver sentinel", errDriverCRC, fault.CRC},
		{"wrapped driver sentinel", fmt.Errorf("sensor x: %w: %q", errDriverCRC, "72 01 NO"), fault.CRC},
		{"marked errno", fmt.Errorf("sensor x: %w", fault.Mark(fault.Timeout, &os.PathError{Op: "read", Path: "in_temp_input", Err: syscall.ETIMEDOUT})), fault.Timeout},
		{"outer mark wins", fault.Mark(fault.Timeout, fmt.Errorf("x: %w", fault.New(fault.Other, "bus error"))), fault.Timeout},
		{"two wrapped, first wins", fmt.Errorf("%w: %w", fault.New(fault.Absent, "no device"), errors.New("ENXIO")), fault.Absent},
		{"read deadline", fmt.Errorf("sensor x: %w", context.DeadlineExceeded), fault.Timeout},
		{"unclassified", errors.New("something"), fault.Other},
		{"class sentinel itself", fault.ErrPowerOn, fault.PowerOn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fault.Of(tt.err); got != tt.want {
				t.Fatalf("Of(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestIs(t *testing.T) {
	wrapped := fmt.Errorf("ds18b20 x: %w", errDriverCRC)
	marked := fault.Mark(fault.CRC, &os.PathError{Op: "read", Path: "f", Err: syscall.EIO})
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"driver error is its class", wrapped, fault.ErrCRC, true},
		{"driver error is not another class", wrapped, fault.ErrTimeout, false},
		{"driver error is its own sentinel", wrapped, errDriverCRC, true},
		{"not another driver's sentinel of the same class", wrapped, errDriverCRC2, false},
		{"marked error is its class", marked, fault.ErrCRC, true},
		{"marked error keeps its errno", marked, syscall.EIO, true},
		{"marked error is not another class", marked, fault.ErrAbsent, false},
		{"plain error has no class", errors.New("x"), fault.ErrOther, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, tt.target); got != tt.want {
				t.Fatalf("errors.Is(%v, %v) = %v, want %v", tt.err, tt.target, got, tt.want)
			}
		})
	}
}

func TestMarkKeepsMessage(t *testing.T) {
	inner := &os.PathError{Op: "read", Path: "/sys/x/in_temp_input", Err: syscall.EIO}
	if got := fault.Mark(fault.CRC, inner).Error(); got != inner.Error() {
		t.Fatalf("Mark changed the message: %q, want %q", got, inner.Error())
	}
	if fault.Mark(fault.CRC, nil) != nil {
		t.Fatal("Mark(c, nil) is not nil")
	}
}

func TestClassesAreDistinct(t *testing.T) {
	seen := map[fault.Class]bool{}
	for _, c := range fault.Classes() {
		if c == "" || seen[c] {
			t.Fatalf("class %q empty or listed twice in %v", c, fault.Classes())
		}
		seen[c] = true
	}
	if len(seen) != 6 {
		t.Fatalf("%d classes, want absent, crc, timeout, out_of_range, power_on, other", len(seen))
	}
}
