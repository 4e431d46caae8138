package status

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/buffer"
)

const ns = "edge_agent"

// Metrics are the agent's own series. The buffer's are read from Stats at
// scrape time (cheap), so they are always current.
type Metrics struct {
	Readings       *prometheus.CounterVec // sensor
	SensorErrors   *prometheus.CounterVec // sensor, class (drivers/fault)
	AppendErrors   prometheus.Counter
	Published      prometheus.Counter
	Delivered      prometheus.Counter
	DeleteErrors   prometheus.Counter
	PublishLatency prometheus.Histogram
	Connected      prometheus.Gauge
	ConnectErrors  prometheus.Counter
	Disconnects    prometheus.Counter
	ClockSynced    prometheus.Gauge
	TSCorrected    prometheus.Counter

	Confirmed      prometheus.Counter
	ConfirmLatency prometheus.Histogram
	Resent         prometheus.Counter
	BadConfirms    *prometheus.CounterVec // reason
}

// NewMetrics creates the agent's metrics, plus Go runtime and process
// collectors, and registers them in reg. stats may be nil (no buffer series).
func NewMetrics(reg prometheus.Registerer, stats func() (buffer.Stats, error)) *Metrics {
	m := &Metrics{
		Readings: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "readings_total",
			Help: "Good readings taken and stored in the buffer, by sensor."}, []string{"sensor"}),
		SensorErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sensor_errors_total",
			Help: "Failed sensor opens and reads, by sensor and class (absent, crc, timeout, out_of_range, power_on, other)."},
			[]string{"sensor", "class"}),
		AppendErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "buffer_append_errors_total",
			Help: "Readings taken but not stored: the buffer refused the append (disk full, I/O error)."}),
		Published: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "published_total",
			Help: "Readings acknowledged by the MQTT broker (PUBACK), re-sends included."}),
		Delivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "delivered_total",
			Help: "Readings deleted from the buffer after delivery."}),
		DeleteErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "buffer_delete_errors_total",
			Help: "Failed deletes of delivered readings (each ends the MQTT session; the readings are sent again)."}),
		PublishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "publish_latency_seconds",
			Help:    "Time from MQTT publish to PUBACK.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "mqtt_connected",
			Help: "1 while connected to the MQTT broker."}),
		ConnectErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "mqtt_connect_errors_total",
			Help: "Failed MQTT connection attempts."}),
		Disconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "mqtt_disconnects_total",
			Help: "MQTT connections lost."}),
		ClockSynced: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "clock_synced",
			Help: "1 once the kernel reports the clock synchronised by NTP."}),
		TSCorrected: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "timestamps_corrected_total",
			Help: "Buffered readings whose unsynced timestamp was corrected after NTP sync."}),
		Confirmed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "confirmed_total",
			Help: "Readings a forwarder confirmed as stored in Kafka (delivery: kafka)."}),
		ConfirmLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "confirm_latency_seconds",
			Help:    "Time from a reading's first publish to its confirmation (delivery: kafka).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600}}),
		Resent: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "resent_total",
			Help: "Readings published again because no confirmation came within mqtt.confirm_timeout."}),
		BadConfirms: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bad_confirmations_total",
			Help: "Ignored messages on the ack topic, by reason: malformed, or unsent (seqs this device never sent)."}, []string{"reason"}),
	}
	for _, r := range []string{"malformed", "unsent"} {
		m.BadConfirms.WithLabelValues(r) // present at 0, so alerts see the series
	}
	reg.MustRegister(m.Confirmed, m.ConfirmLatency, m.Resent, m.BadConfirms)
	reg.MustRegister(m.Readings, m.SensorErrors, m.AppendErrors, m.Published, m.Delivered, m.DeleteErrors, m.PublishLatency, m.Connected,
		m.ConnectErrors, m.Disconnects, m.ClockSynced, m.TSCorrected,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if stats != nil {
		reg.MustRegister(&bufferCollector{stats: stats})
	}
	return m
}

// WatchDelivery registers the unconfirmed-readings gauges, read from
// delivery at scrape time: how many readings wait for a confirmation, and
// how long ago the oldest of them was first published (0 when none).
func WatchDelivery(reg prometheus.Registerer, delivery func() (unconfirmed int, oldest time.Time)) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "unconfirmed_readings",
			Help: "Readings published and not yet confirmed by a forwarder (delivery: kafka); they stay in the buffer."},
			func() float64 { n, _ := delivery(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "unconfirmed_oldest_age_seconds",
			Help: "Time since the oldest unconfirmed reading was first published (0 when none)."},
			func() float64 {
				n, oldest := delivery()
				if n == 0 || oldest.IsZero() {
					return 0
				}
				return max(0, time.Since(oldest).Seconds())
			}),
	)
}

// WatchHealth registers the per-sensor health gauges, read from board at
// scrape time: consecutive failures, and the time of the last good read
// (0 while a sensor has had none).
func WatchHealth(reg prometheus.Registerer, board *health.Board) {
	reg.MustRegister(&healthCollector{board: board})
}

var (
	descConsecutive = prometheus.NewDesc(ns+"_sensor_consecutive_failures",
		"Failed opens and reads of the sensor since its last good read (0: the last read was good).", []string{"sensor"}, nil)
	descLastGood = prometheus.NewDesc(ns+"_sensor_last_good_timestamp_seconds",
		"Unix time of the sensor's last good read, by the agent's clock (0: none yet).", []string{"sensor"}, nil)
)

type healthCollector struct{ board *health.Board }

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConsecutive
	ch <- descLastGood
}

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	sensors, _ := c.board.Snapshot()
	for name, s := range sensors {
		ch <- prometheus.MustNewConstMetric(descConsecutive, prometheus.GaugeValue, float64(s.ConsecutiveFailures), name)
		good := 0.0
		if !s.LastGood.IsZero() {
			good = float64(s.LastGood.UnixMilli()) / 1e3
		}
		ch <- prometheus.MustNewConstMetric(descLastGood, prometheus.GaugeValue, good, name)
	}
}

var (
	descDepth = prometheus.NewDesc(ns+"_buffer_readings", "Readings waiting in the buffer.", nil, nil)
	descLive  = prometheus.NewDesc(ns+"_buffer_live_bytes", "Bytes of readings in the buffer (bounded by buffer.max_bytes).", nil, nil)
	descFile  = prometheus.NewDesc(ns+"_buffer_file_bytes", "Size of the bbolt file.", nil, nil)
	descDrop  = prometheus.NewDesc(ns+"_buffer_dropped_total", "Readings dropped by a buffer bound, by reason (max_bytes, max_age).", []string{"reason"}, nil)
	descAge   = prometheus.NewDesc(ns+"_buffer_oldest_age_seconds", "Age of the oldest buffered reading by its timestamp (0 when empty).", nil, nil)
	descLast  = prometheus.NewDesc(ns+"_buffer_last_seq", "Highest seq ever assigned.", nil, nil)
)

// bufferCollector turns one Stats call per scrape into series.
type bufferCollector struct {
	stats func() (buffer.Stats, error)
}

func (c *bufferCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDepth, descLive, descFile, descDrop, descAge, descLast} {
		ch <- d
	}
}

func (c *bufferCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descDepth, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(st.Count))
	ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(st.LiveBytes))
	ch <- prometheus.MustNewConstMetric(descFile, prometheus.GaugeValue, float64(st.FileBytes))
	ch <- prometheus.MustNewConstMetric(descDrop, prometheus.CounterValue, float64(st.DroppedBytes), "max_bytes")
	ch <- prometheus.MustNewConstMetric(descDrop, prometheus.CounterValue, float64(st.DroppedAge), "max_age")
	age := 0.0
	if st.Count > 0 && !st.OldestTS.IsZero() {
		age = max(0, time.Since(st.OldestTS).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, float64(st.LastSeq))
}
