package dht

import "fmt"

// DecodeFrame decodes the 40 bits a DHT sends after its start signal:
// humidity (2 bytes), temperature (2 bytes) and a checksum, the low byte of
// the sum of the first four. It is pure, for a GPIO bit-banging reader; the
// kernel's dht11 driver does the same work for the IIO path.
//
//   - DHT11: byte 0 integral %RH, byte 1 tenths of %RH, byte 2 integral °C,
//     byte 3 tenths of °C with bit 7 as the sign (newer ASAIR parts; always
//     0 on older ones).
//   - DHT22/AM2302: bytes 0-1 %RH × 10, bytes 2-3 °C × 10, big endian, with
//     bit 15 of the temperature as the sign (sign and magnitude, not two's
//     complement).
//
// It checks the frame, not the datasheet range: see Model.CheckRange.
func DecodeFrame(b [5]byte, m Model) (tempC, rh float64, err error) {
	if sum := b[0] + b[1] + b[2] + b[3]; sum != b[4] {
		return 0, 0, fmt.Errorf("%s frame % x: %w (sum 0x%02x, checksum byte 0x%02x)", m, b, ErrChecksum, sum, b[4])
	}
	switch m {
	case DHT11:
		if b[1] > 9 || b[3]&0x7f > 9 {
			return 0, 0, fmt.Errorf("%s frame % x: %w: decimal byte over 9 (a DHT22 decoded as DHT11?)", m, b, ErrFrame)
		}
		rh = float64(b[0]) + float64(b[1])/10
		tempC = float64(b[2]) + float64(b[3]&0x7f)/10
		if b[3]&0x80 != 0 {
			tempC = -tempC
		}
	case DHT22:
		rh = float64(uint16(b[0])<<8|uint16(b[1])) / 10
		tempC = float64(uint16(b[2]&0x7f)<<8|uint16(b[3])) / 10
		if b[2]&0x80 != 0 {
			tempC = -tempC
		}
	default:
		return 0, 0, fmt.Errorf("frame % x: %w: unknown model %d", b, ErrFrame, int(m))
	}
	return tempC, rh, nil
}
