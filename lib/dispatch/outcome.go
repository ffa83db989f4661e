package dispatch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/logging"
	"github.com/snitools/snitools/lib/relay"
)

// Observer is told when connections start and end, for metrics. Its
// methods are called from many goroutines at once.
type Observer interface {
	Accepted()
	Finished(Report)
}

// Report is what an Observer learns about a finished connection.
type Report struct {
	Outcome  Outcome
	Up, Down int64
	// Peek, Connect and Duration time the hello's arrival, the backend
	// connection and the whole connection; zero where not reached.
	Peek, Connect, Duration time.Duration
	// Backend is the name of the backend that served the connection (a
	// socket in the directory, or the address connected to in tcp
	// modes), "" if none: a value the operator created, never one the
	// client made up.
	Backend string
}

// Outcome says how a connection ended. The values form a fixed list, so
// they are safe to use as metric labels.
type Outcome string

// Outcomes, in the order a connection can meet them.
const (
	OutcomeOK           Outcome = "ok"
	OutcomeNoAnswer     Outcome = "no_answer"     // relayed, and the backend never sent a byte
	OutcomeHandoff      Outcome = "handoff"       // the socket itself passed to the backend
	OutcomeClientClosed Outcome = "client_closed" // closed before a whole hello
	OutcomePeekTimeout  Outcome = "peek_timeout"
	OutcomePeekBudget   Outcome = "peek_budget" // the peek buffers' memory budget was spent
	OutcomeNotTLS       Outcome = "not_tls"
	OutcomeBadHello     Outcome = "bad_hello"
	OutcomeNoSNI        Outcome = "no_sni"
	OutcomeInvalidName  Outcome = "invalid_name"
	OutcomeUnknownName  Outcome = "unknown_name"
	OutcomeRefusedCIDR  Outcome = "refused_cidr" // resolved outside -backend-cidr
	OutcomeBackendError Outcome = "backend_error"
	OutcomeRelayError   Outcome = "relay_error"
	OutcomeIdleTimeout  Outcome = "idle_timeout"
	OutcomeShutdown     Outcome = "shutdown"           // cut at the end of the shutdown timeout
	OutcomeProxyHeader  Outcome = "proxy_header_error" // a trusted front sent no valid header
	OutcomeHealthCheck  Outcome = "health_check"       // a trusted front's LOCAL header: a check, not a client
)

// Outcomes lists every Outcome, for metrics that must know them up front.
func Outcomes() []Outcome {
	return []Outcome{OutcomeOK, OutcomeHandoff, OutcomeClientClosed, OutcomePeekTimeout, OutcomeNotTLS,
		OutcomeBadHello, OutcomeNoSNI, OutcomeInvalidName, OutcomeUnknownName, OutcomeRefusedCIDR,
		OutcomeBackendError, OutcomeRelayError, OutcomeIdleTimeout, OutcomeShutdown, OutcomeProxyHeader, OutcomeHealthCheck,
		OutcomeLoop, OutcomeNoAnswer, OutcomePeekBudget, OutcomeEvicted, OutcomeClientLimit}
}

// DialOutcome is the outcome of a connection whose backend could not be
// used, from the Dialer's error (for lib/quicdispatch, whose flows get no
// alert).
func DialOutcome(err error) Outcome {
	o, _ := dialFailure(err)
	return o
}

// dialFailure says how a connection whose backend could not be used ends,
// and what its client is told.
func dialFailure(err error) (Outcome, clienthello.Alert) {
	switch {
	case errors.Is(err, backend.ErrUnknownName):
		return OutcomeUnknownName, clienthello.AlertUnrecognizedName
	case errors.Is(err, backend.ErrNotAllowed):
		return OutcomeRefusedCIDR, clienthello.AlertUnrecognizedName
	case errors.Is(err, errLoop):
		return OutcomeLoop, clienthello.AlertInternalError
	}
	return OutcomeBackendError, clienthello.AlertInternalError
}

// relayDone returns the completion of r's relay, which runs on a relay
// event loop and so must not block: without per-connection logging it
// finishes the record right there, else in a goroutine, since a log line
// may wait for the journal.
func (s *Server) relayDone(r *record) func(relay.Stats, error) {
	return func(stats relay.Stats, err error) {
		r.stats = stats
		outcome, err := answered(relayOutcome(err), err, r)
		if s.cfg.Quiet {
			s.finish(r, outcome, err)
			return
		}
		go s.finish(r, outcome, err)
	}
}

// record is what the log line and the observer learn about one
// connection, filled in as it goes.
type record struct {
	start         time.Time
	client, local net.Addr // as the client sees them (from a PROXY header behind a front)
	front         net.Addr // the trusted front the connection came through, if any
	sni           string
	backend       string // path or address
	backendName   string // for Report.Backend
	stats         relay.Stats
	peek, connect time.Duration
	outcome       Outcome
	err           error
	closer        io.Closer // cuts the connection at the shutdown timeout; guarded by the group's lock (setCloser)
	adm           admitState
	// outgoing is our backend connection's local address, in
	// Config.Outgoing until the connection is finished.
	outgoing netip.AddrPort
}

// outcomeRelaying is what dispatch returns when the relay took over: the
// relay's completion finishes the record.
const outcomeRelaying Outcome = ""

// finish logs and counts a connection that ended, and frees its slot.
func (s *Server) finish(r *record, outcome Outcome, err error) {
	outcome, err = s.adm.done(r, outcome, err)
	r.outcome, r.err = outcome, err
	if r.outcome == OutcomeRelayError && s.ctx.Err() != nil {
		r.outcome = OutcomeShutdown
	}
	s.report(r)
	s.forgetOutgoing(r)
	s.untrackConn(r)
	s.group.ReleaseSlot()
}

// report writes r's log line and tells the observer how it ended: the one
// place both learn of a connection, whether finish ends it or admitConn
// turns it away before it is tracked.
func (s *Server) report(r *record) {
	s.log(r)
	if s.cfg.Observer != nil {
		s.cfg.Observer.Finished(Report{Outcome: r.outcome, Up: r.stats.Up, Down: r.stats.Down,
			Peek: r.peek, Connect: r.connect, Duration: time.Since(r.start), Backend: r.backendName})
	}
}

// chose records the backend that serves r, on either path.
func (r *record) chose(b backend.Conn) {
	r.backend, r.backendName = b.Backend, b.Name
}

// relayOutcome classifies how a relay ended.
func relayOutcome(err error) Outcome {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, relay.ErrIdle):
		return OutcomeIdleTimeout
	case errors.Is(err, relay.ErrAborted):
		return OutcomeShutdown
	}
	return OutcomeRelayError
}

func (s *Server) log(r *record) {
	if s.cfg.Quiet || r.outcome == OutcomeHealthCheck {
		return // health checks come every few seconds: counted, not logged
	}
	attrs := []slog.Attr{
		slog.String("client", logging.Addr(r.client)),
		slog.String("sni", r.sni),
		slog.String("backend", r.backend),
		slog.Int64("up", r.stats.Up),
		slog.Int64("down", r.stats.Down),
		slog.Duration("duration", time.Since(r.start).Round(time.Microsecond)),
		slog.String("outcome", string(r.outcome)),
	}
	if r.front != nil {
		attrs = append(attrs, slog.String("front", r.front.String()))
	}
	level := slog.LevelInfo
	if r.err != nil {
		attrs = append(attrs, slog.String("error", r.err.Error()))
		if r.outcome == OutcomeBackendError || r.outcome == OutcomeRelayError || r.outcome == OutcomeNoAnswer {
			level = slog.LevelWarn
		}
	}
	s.cfg.Log.LogAttrs(context.Background(), level, "connection", attrs...)
}
