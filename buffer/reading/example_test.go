package reading_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Encode writes the wire format the agent publishes and Kafka stores;
// Decode reads it back strictly, and its errors wrap ErrInvalid.
func Example() {
	r := reading.Reading{
		DeviceID: "pi-greenhouse-1", Seq: 48213, Sensor: "bme280-0x76", Kind: "bme280",
		TS:         time.Date(2025, 11, 25, 10, 15, 2, 125e6, time.UTC),
		TimeSynced: true,
		Values: map[string]float64{
			reading.Temperature: 21.43, reading.Humidity: 48.2, reading.Pressure: 1008.61,
		},
	}
	b := reading.Encode(nil, &r)
	fmt.Println(string(b))

	back, err := reading.Decode(b)
	fmt.Println(back.DeviceID, back.Seq, back.Values[reading.Pressure], err)

	_, err = reading.Decode([]byte(`{"v":1,"seq":1}`))
	fmt.Println(errors.Is(err, reading.ErrInvalid)) // a consumer dead-letters it
	// Output:
	// {"v":1,"device_id":"pi-greenhouse-1","seq":48213,"sensor":"bme280-0x76","kind":"bme280","ts":"2025-11-25T10:15:02.125Z","time_synced":true,"values":{"humidity_pct":48.2,"pressure_hpa":1008.61,"temperature_c":21.43}}
	// pi-greenhouse-1 48213 1008.61 <nil>
	// true
}
