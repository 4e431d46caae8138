package mqttconn_test

import (
	"errors"
	"testing"

	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
)

func TestTLS(t *testing.T) {
	for _, tt := range []struct {
		scheme string
		tls    bool
		err    bool
	}{
		{"ssl", true, false}, {"tls", true, false}, {"mqtts", true, false}, {"tcps", true, false},
		{"tcp", false, false}, {"mqtt", false, false},
		{"ws", false, true}, {"https", false, true}, {"", false, true},
	} {
		got, err := mqttconn.TLS(tt.scheme)
		if got != tt.tls || (err != nil) != tt.err || (err != nil && !errors.Is(err, mqttconn.ErrScheme)) {
			t.Errorf("TLS(%q) = %v, %v", tt.scheme, got, err)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{"localhost": true, "127.0.0.1": true, "127.9.9.9": true, "::1": true,
		"10.0.0.1": false, "example.com": false, "": false} {
		if got := mqttconn.IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v", host, got)
		}
	}
}
