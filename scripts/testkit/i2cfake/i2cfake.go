// Package i2cfake is an I2C bus made of chips that answer from a table,
// for tests that cannot replay one exact sequence of transactions (the
// probe of `edge-agent sensors` asks every family at every address, in an
// order the driver table decides). Driver tests use periph's
// i2ctest.Playback instead, which checks the exact sequence.
//
// A fixture is JSON: per bus name, per address, what each write returns.
// The write is hex; "" is a read with no write. An address with no entry
// does not acknowledge (ENXIO, as Linux reports it), a write the chip has
// no answer for is a NACK (EREMOTEIO):
//
//	{"1": {"0x38": {"71": "1c", "ac3300": "", "": "1c6e3f55e67a2b"}}}
package i2cfake

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// Buses is a set of fake buses by name, as loaded from a fixture.
type Buses map[string]map[uint16]map[string][]byte

// Load reads a fixture file.
func Load(path string) (Buses, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]map[string]map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("i2c fixture %s: %w", path, err)
	}
	out := Buses{}
	for bus, chips := range raw {
		out[bus] = map[uint16]map[string][]byte{}
		for a, replies := range chips {
			addr, err := strconv.ParseUint(a, 0, 16)
			if err != nil {
				return nil, fmt.Errorf("i2c fixture %s: bus %s: address %q: %w", path, bus, a, err)
			}
			m := map[string][]byte{}
			for w, r := range replies {
				rb, err := hex.DecodeString(r)
				if err != nil {
					return nil, fmt.Errorf("i2c fixture %s: bus %s addr %s write %s: %w", path, bus, a, w, err)
				}
				m[w] = rb
			}
			out[bus][uint16(addr)] = m
		}
	}
	return out, nil
}

// Open opens bus name; it has the signature of i2cbus.Opener.
func (bs Buses) Open(name string) (i2c.BusCloser, error) {
	chips, ok := bs[name]
	if !ok {
		return nil, fmt.Errorf("i2cfake: no bus %q in the fixture", name)
	}
	return &Bus{name: name, chips: chips}, nil
}

// Bus is one fake bus. It is safe for concurrent use.
type Bus struct {
	name  string
	chips map[uint16]map[string][]byte
	mu    sync.Mutex
}

// Tx answers from the table, with errors worded as periph's Linux bus
// words them ("sysfs-i2c: <errno>").
func (b *Bus) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	replies, ok := b.chips[addr]
	if !ok {
		return fmt.Errorf("sysfs-i2c: %v", syscall.ENXIO)
	}
	reply, ok := replies[hex.EncodeToString(w)]
	if !ok || len(reply) != len(r) {
		return fmt.Errorf("sysfs-i2c: %v", syscall.EREMOTEIO)
	}
	copy(r, reply)
	return nil
}

// SetSpeed does nothing.
func (b *Bus) SetSpeed(physic.Frequency) error { return nil }

// Close does nothing.
func (b *Bus) Close() error { return nil }

func (b *Bus) String() string { return "i2cfake " + b.name }

var _ i2c.BusCloser = (*Bus)(nil)
