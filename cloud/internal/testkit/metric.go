package testkit

import (
	"io"
	"net/http"
	"strconv"
	"strings"
)

// scrape is a client without gzip, so polling costs the forwarder little
// (the benchmarks measure its CPU while they poll).
var scrape = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// Metric reads one unlabelled sample from the Prometheus endpoint at
// http://addr/metrics; -1 if the endpoint or the sample is not there.
func Metric(addr, name string) float64 {
	resp, err := scrape.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}
