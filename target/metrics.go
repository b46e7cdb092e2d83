package target

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hatarget/hatarget/target/iscsi"
	"github.com/hatarget/hatarget/target/scsi"
)

// metrics are the dataplane's Prometheus series. The per-LUN ones are
// resolved once per device into a lunMetrics, which the device's logical
// units report to: a command then costs a few atomic adds and one
// histogram observation, never a lookup by label.
type metrics struct {
	commands *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	// luns are the resolved series by device name. Both logical units of a
	// device (the read-only mapping of a writable one is a second LU) share
	// the device's, as they share its label. Guarded by Server.mu.
	luns map[string]*lunMetrics
}

// latencyBuckets double from 25µs, a read from the page cache, to 0.8s,
// beyond which a device is stalled rather than slow.
var latencyBuckets = prometheus.ExponentialBuckets(25e-6, 2, 16)

// newMetrics registers the dataplane's collectors with reg; nil reg means no
// metrics, and a nil *metrics does nothing. It panics if reg refuses them,
// which only a second server on the same registry can cause.
func newMetrics(reg prometheus.Registerer, srv *iscsi.Server) *metrics {
	if reg == nil {
		return nil
	}
	labels := []string{"lun", "op"}
	m := &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hatarget_lun_commands_total",
			Help: "SCSI commands completed, by device and operation (read, write, other).",
		}, labels),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hatarget_lun_bytes_total",
			Help: "Data bytes read and written, by device.",
		}, labels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hatarget_lun_latency_seconds",
			Help:    "Execution time of reads and writes in the SCSI layer, by device.",
			Buckets: latencyBuckets,
		}, labels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hatarget_lun_errors_total",
			Help: "SCSI commands that ended in CHECK CONDITION, by device.",
		}, []string{"lun"}),
		luns: map[string]*lunMetrics{},
	}
	reg.MustRegister(m.commands, m.bytes, m.latency, m.errors, newISCSICollector(srv))
	return m
}

// kinds lists the operations a label may name, in scsi.CommandKind order.
var kinds = [scsi.NumKinds]scsi.CommandKind{scsi.KindOther, scsi.KindRead, scsi.KindWrite}

// stats returns the observer for a device's logical units, resolving its
// series the first time. The result is a nil interface without metrics, so
// the LU skips timing altogether.
func (m *metrics) stats(device string) scsi.Stats {
	if m == nil {
		return nil
	}
	if l := m.luns[device]; l != nil {
		return l
	}
	l := &lunMetrics{errors: m.errors.WithLabelValues(device)}
	for _, k := range kinds {
		op := k.String()
		l.commands[k] = m.commands.WithLabelValues(device, op)
		if k != scsi.KindOther {
			l.bytes[k] = m.bytes.WithLabelValues(device, op)
			l.latency[k] = m.latency.WithLabelValues(device, op)
		}
	}
	m.luns[device] = l
	return l
}

// retain deletes the series of every device cfg does not have, so a
// removed device stops being exported (and one re-added starts from zero).
func (m *metrics) retain(cfg Config) {
	if m == nil {
		return
	}
	keep := make(map[string]bool, len(cfg.Devices))
	for _, d := range cfg.Devices {
		keep[d.Name] = true
	}
	for device := range m.luns {
		if keep[device] {
			continue
		}
		for _, k := range kinds {
			m.commands.DeleteLabelValues(device, k.String())
			if k != scsi.KindOther {
				m.bytes.DeleteLabelValues(device, k.String())
				m.latency.DeleteLabelValues(device, k.String())
			}
		}
		m.errors.DeleteLabelValues(device)
		delete(m.luns, device)
	}
}

// lunMetrics are one device's resolved series; it implements scsi.Stats.
// The arrays are indexed by scsi.CommandKind; bytes and latency are only
// kept for reads and writes.
type lunMetrics struct {
	commands [scsi.NumKinds]prometheus.Counter
	bytes    [scsi.NumKinds]prometheus.Counter
	latency  [scsi.NumKinds]prometheus.Observer
	errors   prometheus.Counter
}

func (l *lunMetrics) Completed(kind scsi.CommandKind, bytes int, status scsi.Status, d time.Duration) {
	l.commands[kind].Inc()
	if kind != scsi.KindOther {
		l.bytes[kind].Add(float64(bytes))
		l.latency[kind].Observe(d.Seconds())
	}
	if status == scsi.StatusCheckCondition {
		l.errors.Inc()
	}
}

// iscsiCollector reports sessions and connections when scraped: the iSCSI
// server keeps them already, and gauges updated as they change would be a
// second bookkeeping that could drift from it.
type iscsiCollector struct {
	srv         *iscsi.Server
	sessions    *prometheus.Desc
	connections *prometheus.Desc
}

func newISCSICollector(srv *iscsi.Server) *iscsiCollector {
	return &iscsiCollector{
		srv: srv,
		sessions: prometheus.NewDesc("hatarget_target_sessions",
			"iSCSI sessions in full feature phase, by target.", []string{"target"}, nil),
		connections: prometheus.NewDesc("hatarget_iscsi_connections",
			"Open iSCSI connections, logged in or not (discovery included).", nil, nil),
	}
}

func (c *iscsiCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sessions
	ch <- c.connections
}

func (c *iscsiCollector) Collect(ch chan<- prometheus.Metric) {
	for name, n := range c.srv.SessionsPerTarget() {
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(n), name)
	}
	ch <- prometheus.MustNewConstMetric(c.connections, prometheus.GaugeValue, float64(c.srv.ConnectionCount()))
}
