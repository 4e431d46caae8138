package drivers_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/drivers"
)

// One entry of the config's sensors list, checked at config time, opened
// at start and read on every tick. The sim driver needs no hardware.
func Example() {
	spec := drivers.Spec{Name: "sim-1", Driver: "sim", Interval: time.Second, Seed: 42}
	if err := drivers.Check(spec); err != nil { // config check: no hardware touched
		log.Fatal(err)
	}
	s, err := drivers.Open(spec, drivers.Env{SysfsRoot: "/sys"})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	v, err := s.Read(context.Background()) // good values or an error, never both
	if err != nil {
		log.Fatal(err)
	}
	_, hasT := v[reading.Temperature]
	fmt.Println(s.Name(), s.Kind(), len(v), hasT)

	err = drivers.Check(drivers.Spec{Name: "dht", Driver: "dht22", Bus: "1"})
	fmt.Println(err)
	// Output:
	// sim-1 sim 3 true
	// bus does not apply to driver dht22 (only to [bme280 bmp280 aht20 scd4x bh1750 ina219 ads1115 ads1015])
}
