package status

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/edgepipe/sensorpipe/agent/health"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/metricset"
)

const ns = "edge_agent"

// Metrics are the agent's own series, in a metricset of their own. The
// buffer's are read from Stats at scrape time (cheap), so they are always
// current.
type Metrics struct {
	Set *metricset.Metrics // what /metrics writes (Options.Metrics)

	Readings       *metricset.CounterVec // sensor
	SensorErrors   *metricset.CounterVec // sensor, class (drivers/fault)
	Suppressed     *metricset.CounterVec // sensor
	AppendErrors   *vm.Counter
	Published      *vm.Counter
	Delivered      *vm.Counter
	DeleteErrors   *vm.Counter
	PublishLatency *vm.PrometheusHistogram
	Connected      *vm.Gauge
	ConnectErrors  *vm.Counter
	Disconnects    *vm.Counter
	ClockSynced    *vm.Gauge
	TSCorrected    *vm.Counter

	Confirmed      *vm.Counter
	ConfirmLatency *vm.PrometheusHistogram
	Resent         *vm.Counter
	BadConfirms    *metricset.CounterVec // reason
}

// NewMetrics creates the agent's metrics in a new set (Metrics.Set; /metrics
// adds the Go runtime and process series). stats may be nil (no buffer
// series); it is called once per scrape.
func NewMetrics(stats func() (buffer.Stats, error)) *Metrics {
	set := metricset.New()
	m := &Metrics{
		Set:      set,
		Readings: set.CounterVec(ns+"_readings_total", "Good readings taken and stored in the buffer, by sensor.", "sensor"),
		SensorErrors: set.CounterVec(ns+"_sensor_errors_total",
			"Failed sensor opens and reads, by sensor and class (absent, crc, timeout, out_of_range, power_on, other).",
			"sensor", "class"),
		Suppressed: set.CounterVec(ns+"_readings_suppressed_total",
			"Good readings not stored because every value stayed within the sensor's deadband, by sensor.", "sensor"),
		AppendErrors: set.Counter(ns+"_buffer_append_errors_total",
			"Readings taken but not stored: the buffer refused the append (disk full, I/O error)."),
		Published: set.Counter(ns+"_published_total", "Readings acknowledged by the MQTT broker (PUBACK), re-sends included."),
		Delivered: set.Counter(ns+"_delivered_total", "Readings deleted from the buffer after delivery."),
		DeleteErrors: set.Counter(ns+"_buffer_delete_errors_total",
			"Failed deletes of delivered readings (each ends the MQTT session; the readings are sent again)."),
		PublishLatency: set.Histogram(ns+"_publish_latency_seconds", "Time from MQTT publish to PUBACK.",
			[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
		Connected:     set.Gauge(ns+"_mqtt_connected", "1 while connected to the MQTT broker.", nil),
		ConnectErrors: set.Counter(ns+"_mqtt_connect_errors_total", "Failed MQTT connection attempts."),
		Disconnects:   set.Counter(ns+"_mqtt_disconnects_total", "MQTT connections lost."),
		ClockSynced:   set.Gauge(ns+"_clock_synced", "1 once the kernel reports the clock synchronised by NTP.", nil),
		TSCorrected: set.Counter(ns+"_timestamps_corrected_total",
			"Buffered readings whose unsynced timestamp was corrected after NTP sync."),
		Confirmed: set.Counter(ns+"_confirmed_total", "Readings a forwarder confirmed as stored in Kafka (delivery: kafka)."),
		ConfirmLatency: set.Histogram(ns+"_confirm_latency_seconds",
			"Time from a reading's first publish to its confirmation (delivery: kafka).",
			[]float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600}),
		Resent: set.Counter(ns+"_resent_total",
			"Readings published again because no confirmation came within mqtt.confirm_timeout."),
		BadConfirms: set.CounterVec(ns+"_bad_confirmations_total",
			"Ignored messages on the ack topic, by reason: malformed, unsigned or bad_signature (with mqtt.confirm_keys_file; nothing deleted), or unsent (seqs this device never sent).", "reason"),
	}
	for _, r := range []string{"malformed", "unsigned", "bad_signature", "unsent"} {
		m.BadConfirms.With(r) // present at 0, so alerts see the series
	}
	if stats != nil {
		set.Set.RegisterMetricsWriter(bufferWriter(set, stats))
	}
	return m
}

// WatchDelivery adds the unconfirmed-readings gauges, read from delivery
// at scrape time: how many readings wait for a confirmation, and how long
// ago the oldest of them was first published (0 when none).
func (m *Metrics) WatchDelivery(delivery func() (unconfirmed int, oldest time.Time)) {
	m.Set.Gauge(ns+"_unconfirmed_readings",
		"Readings published and not yet confirmed by a forwarder (delivery: kafka); they stay in the buffer.",
		func() float64 { n, _ := delivery(); return float64(n) })
	m.Set.Gauge(ns+"_unconfirmed_oldest_age_seconds",
		"Time since the oldest unconfirmed reading was first published (0 when none).",
		func() float64 {
			n, oldest := delivery()
			if n == 0 || oldest.IsZero() {
				return 0
			}
			return max(0, time.Since(oldest).Seconds())
		})
}

// WatchHealth adds the per-sensor health gauges, read from board once per
// scrape: consecutive failures, and the time of the last good read (0
// while a sensor has had none).
func (m *Metrics) WatchHealth(board *health.Board) {
	const (
		consecutive = ns + "_sensor_consecutive_failures"
		lastGood    = ns + "_sensor_last_good_timestamp_seconds"
	)
	m.Set.Help(consecutive, "Failed opens and reads of the sensor since its last good read (0: the last read was good).")
	m.Set.Help(lastGood, "Unix time of the sensor's last good read, by the agent's clock (0: none yet).")
	m.Set.Set.RegisterMetricsWriter(func(w io.Writer) {
		sensors, _ := board.Snapshot()
		if len(sensors) == 0 {
			return
		}
		names := slices.Sorted(maps.Keys(sensors))
		vm.WriteMetadataIfNeeded(w, consecutive, "gauge")
		for _, name := range names {
			writeSample(w, metricset.Name(consecutive, "sensor", name), float64(sensors[name].ConsecutiveFailures))
		}
		vm.WriteMetadataIfNeeded(w, lastGood, "gauge")
		for _, name := range names {
			good := 0.0
			if lg := sensors[name].LastGood; !lg.IsZero() {
				good = float64(lg.UnixMilli()) / 1e3
			}
			writeSample(w, metricset.Name(lastGood, "sensor", name), good)
		}
	})
}

// bufferWriter writes the buffer's series from one Stats call. When Stats
// fails (the buffer is closed or broken) it writes none of them; /healthz
// says why.
func bufferWriter(set *metricset.Metrics, stats func() (buffer.Stats, error)) func(io.Writer) {
	const (
		depth   = ns + "_buffer_readings"
		live    = ns + "_buffer_live_bytes"
		file    = ns + "_buffer_file_bytes"
		dropped = ns + "_buffer_dropped_total"
		folded  = ns + "_buffer_folded_total"
		age     = ns + "_buffer_oldest_age_seconds"
		last    = ns + "_buffer_last_seq"
	)
	set.Help(depth, "Readings waiting in the buffer.")
	set.Help(live, "Bytes of readings in the buffer (bounded by buffer.max_bytes).")
	set.Help(file, "Size of the bbolt file.")
	set.Help(dropped, "Readings dropped by a buffer bound, by reason (max_bytes, max_age).")
	set.Help(folded, "Readings folded into aggregates by a full buffer (buffer.when_full: downsample).")
	set.Help(age, "Age of the oldest buffered reading by its timestamp (0 when empty).")
	set.Help(last, "Highest seq ever assigned.")
	return func(w io.Writer) {
		st, err := stats()
		if err != nil {
			return
		}
		oldest := 0.0
		if st.Count > 0 && !st.OldestTS.IsZero() {
			oldest = max(0, time.Since(st.OldestTS).Seconds())
		}
		gauge(w, depth, float64(st.Count))
		gauge(w, live, float64(st.LiveBytes))
		gauge(w, file, float64(st.FileBytes))
		vm.WriteMetadataIfNeeded(w, dropped, "counter")
		writeSample(w, metricset.Name(dropped, "reason", "max_age"), float64(st.DroppedAge))
		writeSample(w, metricset.Name(dropped, "reason", "max_bytes"), float64(st.DroppedBytes))
		vm.WriteMetadataIfNeeded(w, folded, "counter")
		writeSample(w, folded, float64(st.Folded))
		gauge(w, age, oldest)
		gauge(w, last, float64(st.LastSeq))
	}
}

// gauge writes the HELP and TYPE lines of a gauge without labels (when
// metadata is on) and its value.
func gauge(w io.Writer, name string, v float64) {
	vm.WriteMetadataIfNeeded(w, name, "gauge")
	writeSample(w, name, v)
}

// writeSample writes one series line, its value formatted as the
// library's gauges are: whole numbers without an exponent, others %g.
func writeSample(w io.Writer, name string, v float64) {
	if float64(int64(v)) == v {
		fmt.Fprintf(w, "%s %d\n", name, int64(v))
		return
	}
	fmt.Fprintf(w, "%s %g\n", name, v)
}
