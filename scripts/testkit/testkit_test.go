package testkit_test

import (
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// TestPickAddrBelowEphemeral: a picked port is free and outside the range
// outgoing connections draw from, so a server restarted on it finds it free.
func TestPickAddrBelowEphemeral(t *testing.T) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		lo, _ = strconv.Atoi(strings.Fields(string(b))[0])
	}
	for range 20 {
		addr := testkit.FreeAddr(t)
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port >= lo || port < 10000 {
			t.Fatalf("picked %s, want a port in 10000..%d", addr, lo-1)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("picked %s, which is not free: %v", addr, err)
		}
		l.Close()
	}
}

// TestMetrics: one scrape gives every asked sample, -1 for one the page
// lacks; labelled series and comments do not match an unlabelled name.
func TestMetrics(t *testing.T) {
	page := "# HELP forwarder_in_flight x\n# TYPE forwarder_in_flight gauge\nforwarder_in_flight 500\n" +
		"forwarder_produced_total 1.5e+06\nforwarder_produced_total_x 7\nhttp_requests{code=\"200\"} 3\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, page) }))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	got, err := testkit.Metrics(addr, "forwarder_in_flight", "forwarder_produced_total", "http_requests", "absent")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"forwarder_in_flight": 500, "forwarder_produced_total": 1.5e6, "http_requests": -1, "absent": -1}
	if !maps.Equal(got, want) {
		t.Fatalf("Metrics = %v, want %v", got, want)
	}
	if v := testkit.Metric(addr, "forwarder_in_flight"); v != 500 {
		t.Fatalf("Metric = %v, want 500", v)
	}
	srv.Close()
	if _, err := testkit.Metrics(addr, "forwarder_in_flight"); err == nil {
		t.Fatal("Metrics of a closed endpoint: no error")
	}
	if v := testkit.Metric(addr, "forwarder_in_flight"); v != -1 {
		t.Fatalf("Metric of a closed endpoint = %v, want -1", v)
	}
}

func TestNotReportingSQL(t *testing.T) {
	q, err := testkit.NotReportingSQL(filepath.Join("../..", testkit.FleetDashboard))
	if err != nil || !strings.HasPrefix(q, "SELECT device_id FROM (") || !strings.HasSuffix(q, ") AS q ORDER BY device_id") {
		t.Fatalf("NotReportingSQL(the Fleet dashboard) = %q, %v", q, err)
	}
	other := filepath.Join(t.TempDir(), "other.json")
	if err := os.WriteFile(other, []byte(`{"panels":[{"title":"Devices","targets":[{"rawSql":"SELECT 1"}]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := testkit.NotReportingSQL(other); err == nil {
		t.Error("a dashboard without the panel: no error")
	}
}
