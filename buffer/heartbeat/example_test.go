package heartbeat_test

import (
	"fmt"

	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

// A consumer of the status topics (the forwarder's relay, a dashboard)
// decodes each retained message and acts on what it says.
func Example() {
	payload := []byte(`{"v":2,"state":"online","ts":1764988800,"agent":"1.4.0","delivery":"kafka",` +
		`"buffer":{"readings":1200,"bytes":312000,"oldest_age":3600,"drops":{"max_bytes":310},"damaged":1},` +
		`"host":{"temp_c":71.5,"throttle":{"now":["under_voltage"]}}}`)
	h, err := heartbeat.Decode(payload)
	if err != nil {
		panic(err)
	}
	fmt.Println(heartbeat.Topic("sensors", "pi-greenhouse-1"), h.State, h.Agent)
	fmt.Println("dropped by max_bytes:", h.Buffer.Drops[heartbeat.DropMaxBytes], "damaged:", h.Buffer.Damaged)
	fmt.Println("under-voltage now:", h.Host.Throttle.Now)
	// Output:
	// sensors/pi-greenhouse-1/status online 1.4.0
	// dropped by max_bytes: 310 damaged: 1
	// under-voltage now: [under_voltage]
}
