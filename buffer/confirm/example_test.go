package confirm_test

import (
	"fmt"

	"github.com/edgepipe/sensorpipe/buffer/confirm"
)

// The forwarder collects the seqs Kafka acknowledged for one device and
// sends them as one message; the device decodes it and deletes what it covers.
func Example() {
	var acked confirm.Set
	for _, seq := range []uint64{48200, 48201, 48202, 48205} {
		acked.Add(seq)
	}
	wire := confirm.Append(nil, &confirm.Message{ForwarderID: "fwd-a", Seqs: acked.Ranges()})
	fmt.Println(confirm.Topic("sensors", "pi-greenhouse-1"), string(wire))

	m, err := confirm.Decode(wire)
	if err != nil {
		panic(err)
	}
	fmt.Println(m.Count(), "readings confirmed; 48203 is one of them:", m.Seqs[0].Contains(48203))
	// Output:
	// sensors/pi-greenhouse-1/ack {"v":1,"forwarder_id":"fwd-a","seqs":[[48200,48202],[48205,48205]]}
	// 4 readings confirmed; 48203 is one of them: false
}
