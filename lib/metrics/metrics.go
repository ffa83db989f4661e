// Package metrics exposes the toolkit's Prometheus metrics. Recording is
// a few atomic additions per connection; label values come only from fixed
// lists (outcomes, status codes) or from what the operator created
// (backend sockets), never from what a client sent, so no client can grow
// the number of series.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/snitools/snitools/lib/dispatch"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors (goroutines, memory, open file descriptors and their limit).
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// durationBuckets suit everything from a local peek to a long download.
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// Dispatcher records snilisten's connections; it is a dispatch.Observer.
type Dispatcher struct {
	accepted   prometheus.Counter
	active     prometheus.Gauge
	finished   map[dispatch.Outcome]prometheus.Counter
	bytesUp    prometheus.Counter
	bytesDown  prometheus.Counter
	peek       prometheus.Histogram
	connect    prometheus.Histogram
	duration   prometheus.Histogram
	perBackend *prometheus.CounterVec // nil unless asked for
	reg        prometheus.Registerer  // for gauges registered later (WatchPeekBudget)
}

// NewDispatcher registers snilisten's metrics with reg. With perBackend,
// connections are also counted by the backend that served them.
func NewDispatcher(reg prometheus.Registerer, perBackend bool) *Dispatcher {
	d := &Dispatcher{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "snilisten_connections_accepted_total",
			Help: "Connections accepted."}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "snilisten_connections_active",
			Help: "Connections being handled now."}),
		bytesUp: prometheus.NewCounter(prometheus.CounterOpts{Name: "snilisten_bytes_total",
			Help: "Bytes relayed, by direction (up: client to backend).", ConstLabels: prometheus.Labels{"direction": "up"}}),
		bytesDown: prometheus.NewCounter(prometheus.CounterOpts{Name: "snilisten_bytes_total",
			Help: "Bytes relayed, by direction (up: client to backend).", ConstLabels: prometheus.Labels{"direction": "down"}}),
		peek: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "snilisten_peek_seconds",
			Help: "Time from accept to a complete ClientHello (or giving up).", Buckets: durationBuckets}),
		connect: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "snilisten_backend_connect_seconds",
			Help: "Time to find and connect to the backend.", Buckets: durationBuckets}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "snilisten_connection_duration_seconds",
			Help: "Time from accept to close.", Buckets: durationBuckets}),
		finished: map[dispatch.Outcome]prometheus.Counter{},
		reg:      reg,
	}
	finished := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "snilisten_connections_finished_total",
		Help: "Connections finished, by outcome."}, []string{"outcome"})
	for _, o := range dispatch.Outcomes() {
		d.finished[o] = finished.WithLabelValues(string(o)) // every outcome present from the start
	}
	reg.MustRegister(d.accepted, d.active, finished, d.bytesUp, d.bytesDown, d.peek, d.connect, d.duration)
	if perBackend {
		d.perBackend = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "snilisten_backend_connections_total",
			Help: "Connections that reached a backend, by backend (socket name, or address in tcp modes) and outcome."}, []string{"backend", "outcome"})
		reg.MustRegister(d.perBackend)
	}
	return d
}

// Accepted counts a new connection.
func (d *Dispatcher) Accepted() {
	d.accepted.Inc()
	d.active.Inc()
}

// Finished counts a finished connection.
func (d *Dispatcher) Finished(r dispatch.Report) {
	// Everything else first, the finished count last: a scrape that sees
	// a connection finished sees all of it.
	if d.perBackend != nil && r.Backend != "" {
		d.perBackend.WithLabelValues(r.Backend, string(r.Outcome)).Inc()
	}
	d.bytesUp.Add(float64(r.Up))
	d.bytesDown.Add(float64(r.Down))
	d.duration.Observe(r.Duration.Seconds())
	if r.Peek > 0 {
		d.peek.Observe(r.Peek.Seconds())
	}
	if r.Connect > 0 {
		d.connect.Observe(r.Connect.Seconds())
	}
	if c, ok := d.finished[r.Outcome]; ok {
		c.Inc()
	}
	d.active.Dec()
}

// Server serves /metrics.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// CheckAddress reports whether addr is a usable -metrics-listen value:
// host:port or unix:PATH.
func CheckAddress(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return errors.New("empty socket path")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%q: want HOST:PORT or unix:PATH: %v", addr, err)
	}
	return nil
}

// Listen starts serving reg's metrics at /metrics on addr (HOST:PORT or
// unix:PATH).
func Listen(addr string, reg *prometheus.Registry) (*Server, error) {
	network, address := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", path
		if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
			os.Remove(path) // a socket left by an earlier run, never another file
		}
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

// Addr is where the metrics are served.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// Redirect records redirect80's answers; it is a redirect.Observer.
type Redirect struct {
	requests    *prometheus.CounterVec
	challenges  *prometheus.CounterVec
	frontHeader *prometheus.CounterVec
}

// redirectStatuses are the codes redirect80 answers with itself; ACME
// backends' codes are counted under their class ("2xx", ...) so that a
// backend cannot grow the series either.
var redirectStatuses = []int{301, 308, 400, 404, 405, 408, 413, 414, 431, 501, 502, 503, 504, 505}

// NewRedirect registers redirect80's metrics with reg.
func NewRedirect(reg prometheus.Registerer) *Redirect {
	r := &Redirect{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "redirect80_requests_total",
			Help: "Requests answered, by status code."}, []string{"code"}),
		challenges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "redirect80_acme_challenges_total",
			Help: "ACME HTTP-01 challenges forwarded to a backend, by result (forwarded: the backend answered; failed: 502 or 504)."}, []string{"result"}),
		frontHeader: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "redirect80_front_connections_total",
			Help: "Connections from -accept-proxy networks, by PROXY header outcome (ok, health_check, error)."}, []string{"outcome"}),
	}
	for _, code := range redirectStatuses {
		r.requests.WithLabelValues(statusLabel(code))
	}
	for _, res := range []string{"forwarded", "failed"} {
		r.challenges.WithLabelValues(res)
	}
	for _, o := range []string{"ok", "health_check", "error"} {
		r.frontHeader.WithLabelValues(o)
	}
	reg.MustRegister(r.requests, r.challenges, r.frontHeader)
	return r
}

// statusLabel is the code itself for redirect80's own codes, else its class.
func statusLabel(code int) string {
	for _, c := range redirectStatuses {
		if c == code {
			return fmt.Sprint(code)
		}
	}
	return fmt.Sprintf("%dxx", code/100)
}

// Answered counts a response.
func (r *Redirect) Answered(status int, challenge bool) {
	r.requests.WithLabelValues(statusLabel(status)).Inc()
	if challenge {
		result := "forwarded"
		if status == 502 || status == 504 {
			result = "failed"
		}
		r.challenges.WithLabelValues(result).Inc()
	}
}

// FrontHeader counts a connection from a trusted front.
func (r *Redirect) FrontHeader(outcome string) { r.frontHeader.WithLabelValues(outcome).Inc() }
