// Package ads1x15 reads a TI ADS1115 (16 bits) or ADS1015 (12 bits)
// analog-to-digital converter over I2C (0x48..0x4B), using periph.io's
// ads1x15 driver: each configured channel is one single-shot conversion
// per Read, turned into volts and then into the configured quantity by a
// linear scale (a capacitive soil moisture probe: 2.8 V dry = 0 %, 1.2 V
// wet = 100 % is scale -62.5, offset 175, unit pct).
//
// periph chooses the gain (PGA) for the channel's full scale, the data
// rate (128 samples/s), writes the config register and reads the
// conversion register 1/128 s later. Its read does not check the config
// register's OS bit (conversion done), and the datasheet allows the data
// rate to be 10 % slow, so it can return the previous conversion; we
// therefore read the config register after it, wait while the OS bit says
// "converting" (the busy path), and then read the conversion register
// ourselves.
//
//	s, err := ads1x15.New("soil", bus, 0x48, ads1x15.Opts{Chip: "ads1115", Channels: chans})
//	v, err := s.Read(ctx) // one key per channel: soil_moisture_pct, ain1_v, ...
//
// It does not use continuous mode or the comparator/ALERT pin.
package ads1x15

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"regexp"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	periph "periph.io/x/devices/v3/ads1x15"

	"github.com/edgepipe/sensorpipe/drivers/i2cbus"
)

// Addr is the address with ADDR to GND; VDD, SDA and SCL give 0x49..0x4B.
const Addr = 0x48

// DataRate is the samples per second every conversion uses: 7.8 ms per
// conversion, with the ADS1115's noise at its datasheet figure.
const DataRate = 128

// Registers (datasheet 9.6) and the config register's OS bit.
const (
	regConversion = 0x00
	regConfig     = 0x01
	regLoThresh   = 0x02
	regHiThresh   = 0x03
	osIdle        = 0x8000
)

// busyPolls bounds the busy path: the OS bit is checked once per
// conversion time, this many times.
const busyPolls = 4

// Channel is one input and what its volts mean.
type Channel struct {
	// Input is "0".."3" (single-ended, against GND) or "0-1", "0-3",
	// "1-3", "2-3" (differential).
	Input string `yaml:"input"`
	// FullScaleV is the PGA's range: 6.144, 4.096, 2.048, 1.024, 0.512
	// or 0.256 V; 0 means 4.096. The smallest range above the largest
	// input gives the finest steps; an input never exceeds VDD + 0.3 V
	// whatever the range.
	FullScaleV float64 `yaml:"full_scale_v"`
	// Field and Unit make the value key Field_Unit; defaults "ain0" (the
	// input, "ain0_1" for 0-1) and "v".
	Field string `yaml:"field"`
	Unit  string `yaml:"unit"`
	// The value is volts x Scale + Offset; Scale 0 means 1.
	Scale  float64 `yaml:"scale"`
	Offset float64 `yaml:"offset"`
}

// Key is the channel's value key: Field_Unit.
func (c Channel) Key() string {
	f, u := c.Field, c.Unit
	if f == "" {
		f = "ain" + inputKey(c.Input)
	}
	if u == "" {
		u = "v"
	}
	return f + "_" + u
}

func inputKey(in string) string {
	if len(in) == 3 {
		return in[:1] + "_" + in[2:]
	}
	return in
}

var (
	inputs = map[string]periph.Channel{
		"0": periph.Channel0, "1": periph.Channel1, "2": periph.Channel2, "3": periph.Channel3,
		"0-1": periph.Channel0Minus1, "0-3": periph.Channel0Minus3, "1-3": periph.Channel1Minus3, "2-3": periph.Channel2Minus3,
	}
	fullScales = []float64{6.144, 4.096, 2.048, 1.024, 0.512, 0.256}
	nameRe     = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// Chips lists the accepted values of Opts.Chip.
func Chips() []string { return []string{"ads1115", "ads1015"} }

// Opts is the chip and its channels.
type Opts struct {
	Chip     string // "ads1115" or "ads1015"
	Channels []Channel
}

// CheckChannels validates channels; its messages name the entry
// ("channels[1].input ...").
func CheckChannels(chans []Channel) error {
	if len(chans) == 0 {
		return fmt.Errorf("channels: at least one is needed (e.g. {input: \"0\"})")
	}
	keys := map[string]int{}
	for i, c := range chans {
		if _, ok := inputs[c.Input]; !ok {
			return fmt.Errorf(`channels[%d].input %q is not "0".."3", "0-1", "0-3", "1-3" or "2-3"`, i, c.Input)
		}
		if c.FullScaleV != 0 && !containsFloat(fullScales, c.FullScaleV) {
			return fmt.Errorf("channels[%d].full_scale_v %v is not one of %v", i, c.FullScaleV, fullScales)
		}
		if c.Field != "" && !nameRe.MatchString(c.Field) {
			return fmt.Errorf("channels[%d].field %q: use lower-case letters, digits and _ (e.g. soil_moisture)", i, c.Field)
		}
		if c.Unit != "" && !nameRe.MatchString(c.Unit) {
			return fmt.Errorf("channels[%d].unit %q: use lower-case letters, digits and _ (e.g. pct, v)", i, c.Unit)
		}
		if math.IsNaN(c.Scale) || math.IsInf(c.Scale, 0) || math.IsNaN(c.Offset) || math.IsInf(c.Offset, 0) {
			return fmt.Errorf("channels[%d]: scale and offset must be finite numbers", i)
		}
		if j, dup := keys[c.Key()]; dup {
			return fmt.Errorf("channels[%d] has the value key %q of channels[%d]: give it another field or unit", i, c.Key(), j)
		}
		keys[c.Key()] = i
	}
	return nil
}

func containsFloat(xs []float64, x float64) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// pin is one configured channel, ready to read.
type pin struct {
	Channel
	key string
	fsr float64 // volts at code 2^15
	adc periph.PinADC
}

// Sensor is one ADS1115 or ADS1015 with its channels.
type Sensor struct {
	name  string
	kind  string
	where string // "bus 1 addr 0x48", for errors
	bus   i2c.Bus
	addr  uint16
	max   int16 // highest code: 0x7FFF (16 bits), 0x7FF0 (12 bits, left-aligned)
	pins  []pin

	mu sync.Mutex
}

// New prepares the channels of the ADC at addr on bus, which the caller
// owns and closes. It does not talk to the chip: single-shot conversions
// configure it on every Read.
func New(name string, bus i2c.Bus, addr uint16, opts Opts) (*Sensor, error) {
	where := fmt.Sprintf("%s addr 0x%02x", bus, addr)
	if err := CheckChannels(opts.Channels); err != nil {
		return nil, fmt.Errorf("%s %s: %w", opts.Chip, where, err)
	}
	s := &Sensor{name: name, kind: opts.Chip, where: where, bus: bus, addr: addr}
	var dev *periph.Dev
	var err error
	switch opts.Chip {
	case "ads1115":
		dev, err = periph.NewADS1115(bus, &periph.Opts{I2cAddress: addr})
		s.max = 0x7FFF
	case "ads1015":
		dev, err = periph.NewADS1015(bus, &periph.Opts{I2cAddress: addr})
		s.max = 0x7FF0
	default:
		return nil, fmt.Errorf("ads1x15 %s: chip %q is not ads1115 or ads1015", where, opts.Chip)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", s.kind, where, err)
	}
	for _, c := range opts.Channels {
		if c.FullScaleV == 0 {
			c.FullScaleV = 4.096
		}
		if c.Scale == 0 {
			c.Scale = 1
		}
		fsr := physic.ElectricPotential(math.Round(c.FullScaleV * float64(physic.Volt)))
		adc, err := dev.PinForChannel(inputs[c.Input], fsr, DataRate*physic.Hertz, periph.BestQuality)
		if err != nil {
			return nil, fmt.Errorf("%s %s: channel %s: %w", s.kind, where, c.Input, err)
		}
		s.pins = append(s.pins, pin{Channel: c, key: c.Key(), fsr: c.FullScaleV, adc: adc})
	}
	return s, nil
}

// Name returns the configured name.
func (s *Sensor) Name() string { return s.name }

// Kind returns "ads1115" or "ads1015".
func (s *Sensor) Kind() string { return s.kind }

// Read converts every channel once (about 8 ms each) and returns one
// value per channel under its key: volts x scale + offset, rounded to
// 1e-9 of its unit (the ADS1115's step at 0.256 V is 7.8 µV).
func (s *Sensor) Read(ctx context.Context) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := make(map[string]float64, len(s.pins))
	for _, p := range s.pins {
		code, err := s.convert(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("%s %s: channel %s (%s): %w", s.kind, s.where, p.Input, p.key, err)
		}
		if code >= s.max || code == math.MinInt16 {
			return nil, fmt.Errorf("%s %s: channel %s (%s): code 0x%04x: %w (%v V)", s.kind, s.where, p.Input, p.key, uint16(code), ErrSaturated, p.fsr)
		}
		v[p.key] = math.Round((Volts(code, p.fsr)*p.Scale+p.Offset)*1e9) / 1e9
	}
	return v, nil
}

// Volts is the datasheet's transfer function: code x FSR / 2^15.
func Volts(code int16, fsr float64) float64 { return float64(code) * fsr / 32768 }

// convert runs one single-shot conversion through periph, then makes sure
// it is finished before reading its result.
func (s *Sensor) convert(ctx context.Context, p pin) (int16, error) {
	if _, err := p.adc.Read(); err != nil {
		return 0, fmt.Errorf("convert: %w: %w", i2cbus.Classify(err), err)
	}
	for i := 0; ; i++ {
		cfg, err := s.reg(regConfig)
		if err != nil {
			return 0, fmt.Errorf("read config: %w", err)
		}
		if cfg&osIdle != 0 {
			break
		}
		if i == busyPolls {
			return 0, fmt.Errorf("%w after %d checks, config 0x%04x", ErrBusy, busyPolls, cfg)
		}
		t := time.NewTimer(time.Second / DataRate)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
		case <-t.C:
		}
	}
	code, err := s.reg(regConversion)
	if err != nil {
		return 0, fmt.Errorf("read conversion: %w", err)
	}
	return int16(code), nil
}

func (s *Sensor) reg(r byte) (uint16, error) {
	var b [2]byte
	if err := s.bus.Tx(s.addr, []byte{r}, b[:]); err != nil {
		return 0, fmt.Errorf("%w: %w", i2cbus.Classify(err), err)
	}
	return binary.BigEndian.Uint16(b[:]), nil
}

// Close does nothing: after a single-shot conversion the chip powers down
// by itself; the bus is the caller's.
func (s *Sensor) Close() error { return nil }

// Probe knows an ADS1x15 at addr by its threshold registers, which keep
// their power-on values (Lo_thresh 0x8000, Hi_thresh 0x7FFF) unless the
// comparator is used, which we never do. Reading them changes nothing.
// It returns "ads1x15" (the two chips cannot be told apart) or an error
// wrapping ErrWrongChip or an i2cbus error.
func Probe(bus i2c.Bus, addr uint16) (string, error) {
	s := &Sensor{bus: bus, addr: addr}
	lo, err := s.reg(regLoThresh)
	if err != nil {
		return "", err
	}
	hi, err := s.reg(regHiThresh)
	if err != nil {
		return "", err
	}
	if lo != 0x8000 || hi != 0x7FFF {
		return "", fmt.Errorf("%w: thresholds 0x%04x/0x%04x", ErrWrongChip, lo, hi)
	}
	return "ads1x15", nil
}
