package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/snitools/snitools/lib/dispatch"
	"github.com/snitools/snitools/lib/quicdispatch"
	"github.com/snitools/snitools/lib/quicflow"
)

// QUIC records snilisten's QUIC flows; it is a quicdispatch.Observer. Its
// series are apart from the TCP connections' (snilisten_quic_*), with
// the same outcomes, so that one alert rule can cover both or either.
type QUIC struct {
	started       prometheus.Counter
	active        prometheus.Gauge
	finished      map[dispatch.Outcome]prometheus.Counter
	bytesUp       prometheus.Counter
	bytesDown     prometheus.Counter
	datagramsUp   prometheus.Counter
	datagramsDown prometheus.Counter
	dropped       map[string]prometheus.Counter
	hello         prometheus.Histogram
	connect       prometheus.Histogram
	duration      prometheus.Histogram
	perBackend    *prometheus.CounterVec // nil unless asked for
	reg           prometheus.Registerer
}

// NewQUIC registers the QUIC flows' metrics with reg. With perBackend,
// flows are also counted by backend address.
func NewQUIC(reg prometheus.Registerer, perBackend bool) *QUIC {
	direction := func(name, help, dir string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"direction": dir}})
	}
	const bytesHelp = "Bytes of QUIC datagrams (UDP payload) relayed, by direction (up: client to backend)."
	const datagramsHelp = "QUIC datagrams relayed, by direction (up: client to backend)."
	q := &QUIC{
		started: prometheus.NewCounter(prometheus.CounterOpts{Name: "snilisten_quic_flows_started_total",
			Help: "QUIC flows whose ClientHello was whole, routed or refused."}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "snilisten_quic_flows_active",
			Help: "QUIC flows being routed or relayed now."}),
		bytesUp:       direction("snilisten_quic_bytes_total", bytesHelp, "up"),
		bytesDown:     direction("snilisten_quic_bytes_total", bytesHelp, "down"),
		datagramsUp:   direction("snilisten_quic_datagrams_total", datagramsHelp, "up"),
		datagramsDown: direction("snilisten_quic_datagrams_total", datagramsHelp, "down"),
		hello: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "snilisten_quic_hello_seconds",
			Help: "Time from a QUIC flow's first datagram to a whole ClientHello (0 when it came in one).", Buckets: durationBuckets}),
		connect: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "snilisten_quic_backend_connect_seconds",
			Help: "Time from a whole ClientHello to a backend socket.", Buckets: durationBuckets}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "snilisten_quic_flow_duration_seconds",
			Help: "Time from a whole ClientHello to the end of the flow (idle timeout included).", Buckets: durationBuckets}),
		finished: map[dispatch.Outcome]prometheus.Counter{},
		dropped:  map[string]prometheus.Counter{},
		reg:      reg,
	}
	finished := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "snilisten_quic_flows_finished_total",
		Help: "QUIC flows finished, by outcome."}, []string{"outcome"})
	for _, o := range quicOutcomes {
		q.finished[o] = finished.WithLabelValues(string(o))
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "snilisten_quic_datagrams_dropped_total",
		Help: "Datagrams that started or fed no QUIC flow, by reason."}, []string{"reason"})
	for _, r := range quicdispatch.DropReasons() {
		q.dropped[r] = dropped.WithLabelValues(r)
	}
	reg.MustRegister(q.started, q.active, finished, dropped, q.bytesUp, q.bytesDown, q.datagramsUp, q.datagramsDown, q.hello, q.connect, q.duration)
	if perBackend {
		q.perBackend = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "snilisten_quic_backend_flows_total",
			Help: "QUIC flows that reached a backend, by backend address and outcome."}, []string{"backend", "outcome"})
		reg.MustRegister(q.perBackend)
	}
	return q
}

// quicOutcomes are the outcomes a QUIC flow can end with.
var quicOutcomes = []dispatch.Outcome{dispatch.OutcomeOK, dispatch.OutcomeNoAnswer, dispatch.OutcomeNoSNI,
	dispatch.OutcomeInvalidName, dispatch.OutcomeUnknownName, dispatch.OutcomeRefusedCIDR,
	dispatch.OutcomeBackendError, dispatch.OutcomeRelayError, dispatch.OutcomeShutdown, dispatch.OutcomeLoop}

// Started counts a flow whose hello was whole.
func (q *QUIC) Started() {
	q.started.Inc()
	q.active.Inc()
}

// Finished counts a finished flow.
func (q *QUIC) Finished(r quicdispatch.Report) {
	if q.perBackend != nil && r.Backend != "" {
		q.perBackend.WithLabelValues(r.Backend, string(r.Outcome)).Inc()
	}
	q.bytesUp.Add(float64(r.Up))
	q.bytesDown.Add(float64(r.Down))
	q.datagramsUp.Add(float64(r.DatagramsUp))
	q.datagramsDown.Add(float64(r.DatagramsDown))
	q.duration.Observe(r.Duration.Seconds())
	q.hello.Observe(r.Hello.Seconds())
	if r.Connect > 0 {
		q.connect.Observe(r.Connect.Seconds())
	}
	if c, ok := q.finished[r.Outcome]; ok {
		c.Inc()
	}
	q.active.Dec()
}

// Dropped counts a dropped datagram.
func (q *QUIC) Dropped(reason string) {
	if c, ok := q.dropped[reason]; ok {
		c.Inc()
	}
}

// WatchFlows exports the flow table's state: flows waiting for their
// hello, and the bytes held for them.
func (q *QUIC) WatchFlows(stats func() quicflow.Stats) {
	q.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snilisten_quic_flows_pending",
			Help: "QUIC flows waiting for the rest of their ClientHello or for their backend."},
			func() float64 { st := stats(); return float64(st.Pending + st.Routing) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snilisten_quic_pending_bytes",
			Help: "Bytes of datagrams held for pending QUIC flows (reservations included; -quic-pending-budget)."},
			func() float64 { return float64(stats().HeldBytes) }))
}
