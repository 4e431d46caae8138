package heartbeat_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

func TestRoundTrip(t *testing.T) {
	temp := 48.3
	h := heartbeat.Heartbeat{State: heartbeat.Online, TS: 1764988800, Agent: "1.4.0", Delivery: "kafka",
		Config: &heartbeat.Config{Version: "9f2c4e1ab3d0", Source: "file"}, Boot: 1764900000, Uptime: 600,
		Clock:   &heartbeat.Clock{Synced: true, Step: -1.5},
		Buffer:  &heartbeat.Buffer{Readings: 3, Bytes: 700, Drops: map[string]uint64{heartbeat.DropMaxAge: 2}, Damaged: 1},
		Host:    &heartbeat.Host{TempC: &temp, Throttle: &heartbeat.Throttle{}},
		Sensors: map[string]heartbeat.Sensor{"sim-1": {State: "ok", LastGood: 1764988799}}}
	b := heartbeat.Encode(&h)
	got, err := heartbeat.Decode(b)
	h.V = heartbeat.Version
	if err != nil || !reflect.DeepEqual(got, h) {
		t.Fatalf("Decode(%s) = %+v, %v", b, got, err)
	}
	if !strings.Contains(string(b), `"throttle":{}`) {
		t.Errorf("an all-clear throttle must be present and empty: %s", b)
	}
}

// TestDecodeV1: the status message agents published before heartbeats
// still decodes, so a fleet may run both.
func TestDecodeV1(t *testing.T) {
	got, err := heartbeat.Decode([]byte(`{"v":1,"state":"online","delivery":"kafka","unconfirmed":12,"ts":"2026-11-25T10:15:02.125Z",` +
		`"sensors":{"ds18b20-1":{"state":"failing","consecutive_failures":4,"last_error_class":"crc","last_error":"crc=a2 NO","last_error_at":"2026-11-25T10:15:00Z"}}}`))
	want := heartbeat.Heartbeat{V: 1, State: "online", Delivery: "kafka", TS: 1795601702, Buffer: &heartbeat.Buffer{Unconfirmed: 12},
		Sensors: map[string]heartbeat.Sensor{"ds18b20-1": {State: "failing", Fails: 4, ErrClass: "crc", Err: "crc=a2 NO", ErrAt: 1795601700}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode v1 = %+v, %v\nwant %+v", got, err, want)
	}
	if will, err := heartbeat.Decode([]byte(`{"v":1,"state":"offline","delivery":"broker"}`)); err != nil || will.State != "offline" || will.Buffer != nil {
		t.Errorf("v1 will = %+v, %v", will, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":        `online`,
		"no v":            `{"state":"online"}`,
		"future version":  `{"v":3,"state":"online"}`,
		"no state":        `{"v":2}`,
		"odd state":       `{"v":2,"state":"sleeping"}`,
		"wrong type":      `{"v":2,"state":"online","ts":"yesterday"}`,
		"trailing data":   `{"v":2,"state":"online"}{}`,
		"too large":       `{"v":2,"state":"online","agent":"` + strings.Repeat("x", heartbeat.MaxPayload) + `"}`,
		"v1 wrong type":   `{"v":1,"state":"online","unconfirmed":"many"}`,
		"v1 bad state":    `{"v":1,"state":""}`,
		"negative drops":  `{"v":2,"state":"online","buffer":{"drops":{"max_age":-1}}}`,
		"v as a string":   `{"v":"2","state":"online"}`,
		"array, not obj":  `[2,"online"]`,
		"empty":           ``,
		"null":            `null`,
		"sensors as list": `{"v":2,"state":"online","sensors":[]}`,
	} {
		if h, err := heartbeat.Decode([]byte(in)); !errors.Is(err, heartbeat.ErrInvalid) {
			t.Errorf("%s: Decode = %+v, %v; want ErrInvalid", name, h, err)
		}
	}
}
