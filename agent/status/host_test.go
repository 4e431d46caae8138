package status_test

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/agent/status"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

// TestHostFromSysfs reads the CPU temperature and the Raspberry Pi
// firmware's flags from fixture trees of real machines and of the odd
// files they may show, node_exporter style.
func TestHostFromSysfs(t *testing.T) {
	for _, tc := range []struct {
		tree      string
		temp      float64 // 0: none
		tempErr   string  // part of the error
		throttle  *heartbeat.Throttle
		throttErr string
	}{
		{tree: "pi4", temp: 48.312, throttle: &heartbeat.Throttle{
			Now: []string{heartbeat.UnderVoltage, heartbeat.Throttled}, SinceBoot: []string{heartbeat.UnderVoltage, heartbeat.Throttled}}},
		{tree: "pi-ok", temp: 41.856, throttle: &heartbeat.Throttle{}},
		{tree: "mainline", temp: 61, throttle: &heartbeat.Throttle{Now: []string{heartbeat.UnderVoltage}}},
		{tree: "x86", temp: 45}, // the CPU package's zone, not the first one
		{tree: "invalid", temp: 50.5},
		{tree: "garbage", tempErr: `thermal_zone0/temp: "48.3 C" is not a temperature`, throttErr: `get_throttled: "throttled=zz" is not a hex word`},
		{tree: "garbage-hwmon", throttErr: `in0_lcrit_alarm: "2" is not 0 or 1`},
		{tree: "notemp", tempErr: "thermal_zone0/temp: no temp file"},
		{tree: "none"},
		{tree: "does-not-exist"},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			root := filepath.Join("testdata", "sysfs", tc.tree)
			temp, err := status.CPUTemp(root)
			switch {
			case tc.tempErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.tempErr) || temp != nil {
					t.Errorf("CPUTemp = %v, %v; want an error with %q", temp, err, tc.tempErr)
				}
			case err != nil:
				t.Errorf("CPUTemp: %v", err)
			case tc.temp == 0 && temp != nil:
				t.Errorf("CPUTemp = %v, want none", *temp)
			case tc.temp != 0 && (temp == nil || *temp != tc.temp):
				t.Errorf("CPUTemp = %v, want %v", temp, tc.temp)
			}
			th, err := status.ReadThrottle(root)
			switch {
			case tc.throttErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.throttErr) {
					t.Errorf("ReadThrottle = %+v, %v; want an error with %q", th, err, tc.throttErr)
				}
			case err != nil:
				t.Errorf("ReadThrottle: %v", err)
			case !reflect.DeepEqual(th, tc.throttle):
				t.Errorf("ReadThrottle = %+v, want %+v", th, tc.throttle)
			}
		})
	}
}
