package statushttp

import (
	"bytes"
	"io"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// Metrics is a command's own series: a metrics.Set of its own (nothing goes
// in the library's default set) and the HELP text of each family.
type Metrics struct {
	// Set holds the series. Counter, Gauge and Histogram add to it with
	// their HELP text; series made and removed while the command runs
	// (one per Kafka partition, say) go in directly, their family's text
	// given once with Help.
	Set *metrics.Set

	mu   sync.Mutex
	help map[string]string
}

// NewMetrics returns an empty Metrics.
func NewMetrics() *Metrics {
	return &Metrics{Set: metrics.NewSet(), help: map[string]string{}}
}

// Help sets the HELP text of family, a metric name without its labels.
func (m *Metrics) Help(family, text string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.help[family] = helpEscaper.Replace(text)
}

// helpEscaper escapes HELP text as the text format requires.
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// Counter adds the counter name (`x_total`, or `x_total{k="v"}` with its
// labels sorted by name) and sets its family's HELP text.
func (m *Metrics) Counter(name, help string) *metrics.Counter {
	m.Help(family(name), help)
	return m.Set.NewCounter(name)
}

// Gauge adds the gauge name, which reports f() when f is not nil (and
// what was Set otherwise), and sets its family's HELP text.
func (m *Metrics) Gauge(name, help string, f func() float64) *metrics.Gauge {
	m.Help(family(name), help)
	return m.Set.NewGauge(name, f)
}

// Histogram adds the Prometheus histogram name (series name_bucket{le=...},
// name_sum, name_count) with the given bucket upper bounds (+Inf is
// implied) and sets its HELP text.
func (m *Metrics) Histogram(name, help string, upperBounds []float64) *metrics.PrometheusHistogram {
	m.Help(family(name), help)
	return m.Set.NewPrometheusHistogramExt(name, upperBounds)
}

// WritePrometheus writes the set, then the Go runtime and process series
// (go_*, process_*, with process_open_fds and process_max_fds), in the
// Prometheus text format.
//
// HELP and TYPE lines come with them when the process has called
// metrics.ExposeMetadata(true) (the library has only that global switch;
// cloud-forwarder's main sets it). The library writes HELP lines without
// text; WritePrometheus fills in the text of the families it was given.
func (m *Metrics) WritePrometheus(w io.Writer) {
	var b bytes.Buffer
	m.Set.WritePrometheus(&b)
	metrics.WriteProcessMetrics(&b)
	metrics.WriteFDMetrics(&b)

	out := make([]byte, 0, b.Len()+b.Len()/2)
	m.mu.Lock()
	for rest := b.Bytes(); len(rest) > 0; {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		out = append(out, line...)
		if fam, ok := bytes.CutPrefix(line, []byte("# HELP ")); ok {
			if text, ok := m.help[string(fam)]; ok {
				out = append(append(out, ' '), text...)
			}
		}
		out = append(out, '\n')
	}
	m.mu.Unlock()
	_, _ = w.Write(out)
}

// family is a metric name without its labels.
func family(name string) string {
	f, _, _ := strings.Cut(name, "{")
	return f
}
