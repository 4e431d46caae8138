package dht

import (
	"errors"
	"testing"
)

func TestDecodeFrame(t *testing.T) {
	tests := []struct {
		name    string
		frame   [5]byte
		model   Model
		wantT   float64
		wantRH  float64
		wantErr error
	}{
		// AM2302 datasheet worked example.
		{"am2302 example", [5]byte{0x02, 0x8C, 0x01, 0x5F, 0xEE}, DHT22, 35.1, 65.2, nil},
		// AM2302 datasheet: temperature 0x80 0x65 is -10.1 °C (sign bit, not two's complement).
		{"am2302 negative", [5]byte{0x02, 0x8C, 0x80, 0x65, 0x73}, DHT22, -10.1, 65.2, nil},
		{"dht22 extremes", [5]byte{0x03, 0xE8, 0x81, 0x90, 0xFC}, DHT22, -40, 100, nil},
		{"dht22 checksum wraps", [5]byte{0xFF, 0xFF, 0x00, 0x01, 0xFF}, DHT22, 0.1, 6553.5, nil},
		{"dht22 bad checksum", [5]byte{0x02, 0x8C, 0x01, 0x5F, 0xEF}, DHT22, 0, 0, ErrChecksum},
		// DHT11 datasheet example 1: 53 %RH, 24 °C.
		{"dht11 example", [5]byte{0x35, 0x00, 0x18, 0x00, 0x4D}, DHT11, 24, 53, nil},
		// DHT11 datasheet example 2: same data, checksum 0x49: "received data is not correct".
		{"dht11 example bad checksum", [5]byte{0x35, 0x00, 0x18, 0x00, 0x49}, DHT11, 0, 0, ErrChecksum},
		{"dht11 decimals", [5]byte{0x35, 0x05, 0x18, 0x03, 0x55}, DHT11, 24.3, 53.5, nil},
		{"dht11 negative (ASAIR)", [5]byte{0x35, 0x00, 0x05, 0x82, 0xBC}, DHT11, -5.2, 53, nil},
		{"dht22 frame read as dht11", [5]byte{0x02, 0x8C, 0x01, 0x5F, 0xEE}, DHT11, 0, 0, ErrFrame},
		{"unknown model", [5]byte{0, 0, 0, 0, 0}, Model(21), 0, 0, ErrFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			temp, rh, err := DecodeFrame(tt.frame, tt.model)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && (temp != tt.wantT || rh != tt.wantRH) {
				t.Fatalf("got %v °C %v %%, want %v °C %v %%", temp, rh, tt.wantT, tt.wantRH)
			}
		})
	}
}

func TestCheckRange(t *testing.T) {
	tests := []struct {
		model Model
		t, rh float64
		ok    bool
	}{
		{DHT22, -40, 0, true}, {DHT22, 80, 100, true}, {DHT22, -40.1, 50, false}, {DHT22, 20, 100.1, false},
		{DHT11, 0, 20, true}, {DHT11, 50, 90, true}, {DHT11, -1, 50, false}, {DHT11, 25, 95, false}, {DHT11, 25, 19, false},
	}
	for _, tt := range tests {
		err := tt.model.CheckRange(tt.t, tt.rh)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrOutOfRange)) {
			t.Errorf("%s CheckRange(%v, %v) = %v", tt.model, tt.t, tt.rh, err)
		}
	}
}
