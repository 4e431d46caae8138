package forwarder

import "testing"

func TestSplitTopic(t *testing.T) {
	tests := []struct {
		topic          string
		ok             bool
		ackTo, dev, sn string
	}{
		{"sensors/pi-1/bme280-0x76/reading", true, "sensors/pi-1", "pi-1", "bme280-0x76"},
		{"a/b/sensors/pi-1/s/reading", true, "a/b/sensors/pi-1", "pi-1", "s"},
		{"pi-1/s/reading", false, "", "", ""},     // no prefix
		{"/pi-1/s/reading", false, "", "", ""},    // empty prefix
		{"sensors//s/reading", false, "", "", ""}, // empty device
		{"sensors/pi-1//reading", false, "", "", ""},
		{"sensors/pi-1/s/status", false, "", "", ""},
		{"sensors/pi-1/s/reading/x", false, "", "", ""},
		{"reading", false, "", "", ""},
		{"", false, "", "", ""},
	}
	for _, tt := range tests {
		l, ok := splitTopic(tt.topic)
		if ok != tt.ok {
			t.Errorf("%q: ok = %t, want %t", tt.topic, ok, tt.ok)
			continue
		}
		if ok && (tt.topic[:l.devEnd] != tt.ackTo || l.device != tt.dev || l.sensor != tt.sn) {
			t.Errorf("%q: got %q %q %q, want %q %q %q", tt.topic, tt.topic[:l.devEnd], l.device, l.sensor, tt.ackTo, tt.dev, tt.sn)
		}
	}
}

func TestLooseSeq(t *testing.T) {
	tests := []struct {
		payload string
		seq     uint64
		ok      bool
	}{
		{`{"seq":42}`, 42, true},
		{`{"v":1,"device_id":"d","seq":7,"values":{"t":1e999}}`, 7, true},
		{`{"seq":"9"}`, 9, true}, // encoding/json reads a quoted number into json.Number
		{`{"seq":9007199254740992}`, 1 << 53, true},
		{`{"seq":9007199254740993}`, 0, false},
		{`{"seq":0}`, 0, false},
		{`{"seq":-1}`, 0, false},
		{`{"seq":1.5}`, 0, false},
		{`{"seq":"x"}`, 0, false},
		{`{"values":{"t":NaN},"seq":3}`, 0, false},
		{`{"device_id":"d"}`, 0, false},
		{`not json`, 0, false},
		{``, 0, false},
	}
	for _, tt := range tests {
		seq, ok := looseSeq([]byte(tt.payload))
		if seq != tt.seq || ok != tt.ok {
			t.Errorf("%s: got %d %t, want %d %t", tt.payload, seq, ok, tt.seq, tt.ok)
		}
	}
}
