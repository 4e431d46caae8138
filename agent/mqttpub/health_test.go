package mqttpub_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/agent/status"
	"github.com/edgepipe/sensorpipe/drivers/fault"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// TestStatusCarriesSensorHealth: with agent/status's Reporter as its
// StatusSource, the retained status carries each sensor's health from
// connect on, and is published again (in broker mode too, which has no
// count to report) when a probe starts failing and when it recovers; the
// offline status on a clean stop keeps it.
func TestStatusCarriesSensorHealth(t *testing.T) {
	br := broker.New(t, broker.Options{})
	var board health.Board
	board.Track([]string{"ds18b20-1", "sim-1"})
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	board.Good("sim-1", t0)
	rep := status.NewReporter(status.Sources{Agent: "1.2.3", Health: &board}, status.ReporterOptions{Interval: time.Hour, CheckEvery: 20 * time.Millisecond, MinGap: 50 * time.Millisecond})
	r := start(t, openBuffer(t), mqttpub.Options{URL: br.URL(), Status: rep})
	topic := "sensors/" + device + "/status"

	testkit.WaitFor(t, "the online status", 5*time.Second, func() bool { return br.Retained(topic) != "" })
	st := statusOf(t, br.Retained(topic))
	if st.State != "online" || st.Agent != "1.2.3" || st.Sensors["sim-1"].State != "ok" || st.Sensors["sim-1"].LastGood != t0.Unix() ||
		st.Sensors["ds18b20-1"].State != "unknown" {
		t.Fatalf("status on connect = %s", br.Retained(topic))
	}

	crc := fmt.Errorf("ds18b20 ds18b20-1: %w", fault.Mark(fault.CRC, errors.New(`w1_slave: CRC check failed: "72 01 4b 46 7f ff 0e 10 57 : crc=a2 NO"`)))
	for range 3 {
		board.Fail("ds18b20-1", t0.Add(time.Second), crc)
	}
	testkit.WaitFor(t, "the status to show the failing probe", 5*time.Second, func() bool {
		h := statusOf(t, br.Retained(topic)).Sensors["ds18b20-1"]
		return h.State == "failing" && h.Fails == 3
	})
	h := statusOf(t, br.Retained(topic)).Sensors["ds18b20-1"]
	if h.ErrClass != string(fault.CRC) || h.Err != crc.Error() || h.ErrAt != t0.Add(time.Second).Unix() || h.LastGood != 0 {
		t.Fatalf("failing probe in the status: %+v", h)
	}

	board.Good("ds18b20-1", t0.Add(2*time.Second))
	testkit.WaitFor(t, "the status to show the recovery", 5*time.Second, func() bool {
		h := statusOf(t, br.Retained(topic)).Sensors["ds18b20-1"]
		return h.State == "ok" && h.Fails == 0 && h.LastGood == t0.Add(2*time.Second).Unix() && h.ErrClass == string(fault.CRC) && h.Err == ""
	})

	r.stop(t)
	st = statusOf(t, br.Retained(topic))
	if st.State != "offline" || st.Sensors["ds18b20-1"].State != "ok" || len(st.Sensors) != 2 {
		t.Fatalf("status after a clean stop = %s", br.Retained(topic))
	}
}
