package ds18b20

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/drivers/fault"
)

func TestRead(t *testing.T) {
	tests := []struct {
		name    string
		root    string
		id      string
		want    float64
		wantErr error
		msg     string
		class   fault.Class // of the error, for the agent's health
	}{
		{"good w1_slave", "good", "auto", 23.125, nil, "", ""},
		{"good by id", "good", "28-0316a2793aff", 23.125, nil, "", ""},
		{"temperature file preferred", "newkernel", "", 23.187, nil, "", ""},
		{"negative", "negative", "auto", -10.125, nil, "", ""},
		{"first of several, ignoring family 10", "multiple", "auto", 25.062, nil, "", ""},
		{"chosen of several", "multiple", "28-0316a2793aff", 23.125, nil, "", ""},
		{"crc NO", "crcno", "auto", 0, ErrCRC, `w1_slave: CRC check failed: "72 01 4b 46 7f ff 0e 10 57 : crc=a2 NO"`, fault.CRC},
		{"power-on 85000", "poweron", "auto", 0, ErrPowerOn, "85", fault.PowerOn},
		{"all zeros", "zeros", "auto", 0, ErrOutOfRange, "all zeros", fault.OutOfRange},
		{"garbage", "garbage", "auto", 0, ErrParse, `want 2 lines, got "hello"`, fault.Other},
		{"empty temperature file", "tempempty", "auto", 0, ErrCRC, "temperature: empty", fault.CRC},
		{"missing device", "missing", "auto", 0, ErrNoDevice, "dtoverlay=w1-gpio", fault.Absent},
		{"configured id absent", "good", "28-000000000bad", 0, ErrNoDevice, "28-000000000bad not found (ids present: [28-0316a2793aff])", fault.Absent},
		{"no w1 at all", "nonexistent", "auto", 0, ErrNoDevice, "", fault.Absent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New("ds", Opts{SysfsRoot: filepath.Join("testdata", tt.root), ID: tt.id})
			v, err := s.Read(context.Background())
			if !errors.Is(err, tt.wantErr) || (err != nil && !strings.Contains(err.Error(), tt.msg)) {
				t.Fatalf("Read = %v, %v; want %v containing %q", v, err, tt.wantErr, tt.msg)
			}
			if c := fault.Of(err); c != tt.class {
				t.Fatalf("fault.Of(%v) = %q, want %q", err, c, tt.class)
			}
			if err != nil {
				if v != nil {
					t.Fatalf("values %v returned with error", v)
				}
				return
			}
			if len(v) != 1 || v["temperature_c"] != tt.want {
				t.Fatalf("Read = %v, want temperature_c %v", v, tt.want)
			}
		})
	}
}

func TestAutoWarnsOnSeveral(t *testing.T) {
	var log bytes.Buffer
	s := New("ds", Opts{SysfsRoot: "testdata/multiple", Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if _, err := s.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "set w1_id") || !strings.Contains(log.String(), "28-0316a2793aff") {
		t.Fatalf("log = %q", log.String())
	}
}

func TestDeviceReappears(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "bus/w1/devices/28-0316a2793aff")
	good, err := os.ReadFile("testdata/good/bus/w1/devices/28-0316a2793aff/w1_slave")
	if err != nil {
		t.Fatal(err)
	}
	write := func() {
		if err := os.MkdirAll(dev, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dev, "w1_slave"), good, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := New("ds", Opts{SysfsRoot: root})
	ctx := context.Background()
	if _, err := s.Read(ctx); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("before plug: %v", err)
	}
	write()
	if v, err := s.Read(ctx); err != nil || v["temperature_c"] != 23.125 {
		t.Fatalf("after plug: %v, %v", v, err)
	}
	os.RemoveAll(dev)
	if _, err := s.Read(ctx); !errors.Is(err, os.ErrNotExist) || fault.Of(err) != fault.Absent {
		t.Fatalf("after unplug: %v (class %q, want absent)", err, fault.Of(err))
	}
	write()
	if _, err := s.Read(ctx); err != nil {
		t.Fatalf("after replug: %v", err)
	}
}

func TestFind(t *testing.T) {
	ids, err := Find("testdata/multiple")
	if err != nil || strings.Join(ids, " ") != "28-000008d1e4a2 28-0316a2793aff" {
		t.Fatalf("Find = %v, %v", ids, err)
	}
}

func TestParseW1SlaveCases(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr error
	}{
		{"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n", 23125, nil},
		{"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=abc\n", 0, ErrParse},
		{"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57\n", 0, ErrParse},
		{"ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n", 0, ErrCRC},
		{"", 0, ErrParse},
		{"x\ny\n", 0, ErrParse},
	}
	for _, tt := range tests {
		got, err := ParseW1Slave([]byte(tt.in))
		if !errors.Is(err, tt.wantErr) || got != tt.want {
			t.Errorf("ParseW1Slave(%q) = %v, %v; want %v, %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
