package bufhttp_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/bufhttp"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

func appendReadings(t *testing.T, b *buffer.Buffer, n int) {
	t.Helper()
	rs := make([]*reading.Reading, n)
	for i := range rs {
		rs[i] = &reading.Reading{DeviceID: "pi-test", Sensor: "sim-0", Kind: "sim", TS: time.Now().UTC(), TimeSynced: true,
			Values: map[string]float64{reading.Temperature: 21.5}}
	}
	if err := b.Append(context.Background(), rs...); err != nil {
		t.Fatal(err)
	}
}

func TestHandler(t *testing.T) {
	db := filepath.Join(t.TempDir(), "buffer.db")
	b, err := buffer.Open(db, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	appendReadings(t, b, 5)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.StripPrefix("/buffer", bufhttp.Handler(b, nil)), ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String() + "/buffer"
	tests := []struct {
		method, path string
		code         int
	}{
		{"GET", "/stats", 200},
		{"GET", "/list?n=2", 200},
		{"GET", "/list?n=x", 400},
		{"GET", "/export?from=2&to=3", 200},
		{"GET", "/export?to=-1", 400},
		{"GET", "/nope", 404},
		{"POST", "/stats", 405},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, base+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.code)
		}
	}
}
