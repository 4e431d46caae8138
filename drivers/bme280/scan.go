package bme280

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"periph.io/x/conn/v3/i2c/i2creg"
)

// Found is a BME280/BMP280 answering on a Linux I2C bus.
type Found struct {
	Bus  string // "1" for /dev/i2c-1
	Addr uint16 // 0x76 or 0x77
	Kind string // "bme280" or "bmp280"
}

// Scan probes 0x76 and 0x77 on every /dev/i2c-* under devDir ("/dev") and
// returns the chips that answer with a BME280/BMP280 chip id. With no
// /dev/i2c-* it returns nothing and touches no hardware. Errors opening a
// bus are returned alongside what was found on the others.
func Scan(devDir string) ([]Found, []error) {
	paths, _ := filepath.Glob(filepath.Join(devDir, "i2c-*"))
	if len(paths) == 0 {
		return nil, nil
	}
	sort.Strings(paths)
	if err := hostInit(); err != nil {
		return nil, []error{fmt.Errorf("periph host init: %w", err)}
	}
	var found []Found
	var errs []error
	for _, p := range paths {
		name := strings.TrimPrefix(filepath.Base(p), "i2c-")
		bus, err := i2creg.Open(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("open %s: %w", p, err))
			continue
		}
		for _, addr := range []uint16{0x76, 0x77} {
			if kind, err := Probe(bus, addr); err == nil {
				found = append(found, Found{Bus: name, Addr: addr, Kind: kind})
			}
		}
		bus.Close()
	}
	return found, errs
}
