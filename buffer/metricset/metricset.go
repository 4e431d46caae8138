// Package metricset is a program's own Prometheus series, kept in a
// github.com/VictoriaMetrics/metrics Set with the HELP text of each family,
// for the /metrics endpoints of both edge-agent and cloud-forwarder.
//
// It is VictoriaMetrics/metrics rather than client_golang because
// client_golang links google.golang.org/protobuf, whose init alone adds
// ~3.3 MiB of resident pages to a process (see docs/AGENT.md).
//
// The library writes "# HELP name" without text, and HELP and TYPE lines
// only once the program has called metrics.ExposeMetadata(true) (a
// process-wide switch; each command's main sets it). Metrics keeps each
// family's text beside a Set of its own (nothing goes in the library's
// default set) and fills it in as it writes.
package metricset

import (
	"bytes"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// Metrics is a command's own series: a metrics.Set of its own and the HELP
// text of each family.
type Metrics struct {
	// Set holds the series. Counter, Gauge, Histogram and CounterVec add
	// to it with their HELP text; series made and removed while the
	// command runs (one per Kafka partition, say) and metrics writers
	// (Set.RegisterMetricsWriter) go in directly, their families' text
	// given once with Help.
	Set *metrics.Set

	mu   sync.Mutex
	help map[string]string
}

// New returns an empty Metrics.
func New() *Metrics {
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
// labels sorted by name; see Name) and sets its family's HELP text.
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

// CounterVec is a family of counters with labels. A series exists from
// the first With of its label values on; a series that must be there at
// 0 from the start (so alerts see it) is made by calling With then.
type CounterVec struct {
	set    *metrics.Set
	family string
	labels []string
}

// CounterVec sets the HELP text of the counter family and returns it, with
// no series yet. labels are the label names, in the order With takes
// their values.
func (m *Metrics) CounterVec(family, help string, labels ...string) *CounterVec {
	m.Help(family, help)
	return &CounterVec{set: m.Set, family: family, labels: labels}
}

// With returns the counter of the label values (one per label name, in
// order), adding it at 0 the first time. Callers that count often keep
// the counter rather than calling With each time.
func (v *CounterVec) With(values ...string) *metrics.Counter {
	if len(values) != len(v.labels) {
		panic("metricset: " + v.family + " takes " + strings.Join(v.labels, ", "))
	}
	pairs := make([]string, 0, 2*len(values))
	for i, l := range v.labels {
		pairs = append(pairs, l, values[i])
	}
	return v.set.GetOrCreateCounter(Name(v.family, pairs...))
}

// Name is the series name of family with the labels given as name, value
// pairs: `family{a="1",b="2"}`, the labels sorted by name (as client_golang
// writes them) and the values escaped as the text format requires.
func Name(family string, labelValues ...string) string {
	if len(labelValues) == 0 {
		return family
	}
	if len(labelValues)%2 != 0 {
		panic("metricset: Name takes label name, value pairs")
	}
	idx := make([]int, 0, len(labelValues)/2)
	for i := 0; i < len(labelValues); i += 2 {
		idx = append(idx, i)
	}
	sort.SliceStable(idx, func(a, b int) bool { return labelValues[idx[a]] < labelValues[idx[b]] })
	var b strings.Builder
	b.WriteString(family)
	b.WriteByte('{')
	for n, i := range idx {
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(labelValues[i])
		b.WriteString(`="`)
		b.WriteString(valueEscaper.Replace(labelValues[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// valueEscaper escapes label values as the text format requires.
var valueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

// WritePrometheus writes the set (its metrics writers included), then the
// Go runtime and process series (go_*, process_*, with process_open_fds
// and process_max_fds), in the Prometheus text format.
//
// HELP and TYPE lines come with them when the process has called
// metrics.ExposeMetadata(true). The library writes HELP lines without
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
