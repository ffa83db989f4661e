// Package dispatch is the heart of snilisten: it accepts connections, peeks
// at each ClientHello without consuming it, finds the backend for the
// server name, and relays the untouched stream, ending with one log line
// per connection.
//
// Data flows one way: listener -> peek (clienthello) -> name (hostname) ->
// backend (dial) -> relay -> log line. Every failure is explicit: a client
// that spoke TLS gets an alert saying why it cannot be served, anything
// else is closed, and the log line says what happened.
//
// A connection takes one of two paths. The general path gives it a
// goroutine and a net.Conn, and may wait: for the rest of a hello, for a
// PROXY header from a trusted front, for DNS, for a client to read its
// alert. In unix mode most connections never need any of that: the hello
// arrived with the connection (TCP_DEFER_ACCEPT), the name has a socket.
// For them the accept loop itself does everything with raw, non-blocking
// system calls (lib/rawsys) and hands the two descriptors to the relay:
// no goroutine, no registration with the runtime's poller, no wake-up of
// another thread (dispatchNow). In tcp and nat46 modes the same
// connections get a goroutine only for DNS and the connect, with the
// backend socket made raw as well (dialAndRelay). Anything unusual goes to
// the general path unchanged, so every behaviour is defined there once.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/handoff"
	"github.com/snitools/snitools/lib/hostname"
	"github.com/snitools/snitools/lib/listener"
	"github.com/snitools/snitools/lib/peek"
	"github.com/snitools/snitools/lib/proxyheader"
	"github.com/snitools/snitools/lib/rawsys"
	"github.com/snitools/snitools/lib/relay"
)

// Config says how a Server dispatches. Zero durations mean no limit.
type Config struct {
	// Dialer finds and connects to the backend for a name.
	Dialer backend.Dialer
	// ProxyHeader is the PROXY protocol version sent to the backend
	// before the stream: 0 for none, 1 or 2.
	ProxyHeader byte
	// DefaultHostname (canonical) is used when a client sends no SNI.
	DefaultHostname string
	// PeekTimeout bounds the wait for a complete ClientHello.
	PeekTimeout time.Duration
	// ConnectTimeout bounds connecting to the backend.
	ConnectTimeout time.Duration
	// IdleTimeout closes a relayed connection silent for that long.
	IdleTimeout time.Duration
	// MaxConns bounds concurrent connections; beyond it new ones wait in
	// the kernel's accept queue, unless a connection still waiting for
	// its hello can be evicted (admission.go). 0 means no bound.
	MaxConns int
	// MaxConnsPerClient bounds concurrent connections from one IPv4
	// address or IPv6 /64, peeking and relayed alike, so that one client
	// cannot take every slot; more are closed at once. 0 means no bound.
	MaxConnsPerClient int
	// HelloLimit bounds the ClientHello's size (clienthello.DefaultLimit
	// if 0).
	HelloLimit int
	// PeekBudget bounds the memory of all peek buffers together, beyond
	// the first PeekFree bytes of each (DefaultPeekBudget if 0).
	PeekBudget int64
	// Log receives one line per connection, and warnings.
	Log *slog.Logger
	// Quiet leaves out the per-connection lines.
	Quiet bool
	// TrustedFronts are the networks of load balancers whose connections
	// must begin with a PROXY header naming the real client (v1 or v2).
	// Headers from anywhere else are never read, let alone believed.
	TrustedFronts proxyheader.Trusted
	// Observer, if set, is told about every connection (metrics).
	Observer Observer
	// Outgoing, if set, is the set the dialer adds its connections to:
	// a connection from one of them is refused (OutcomeLoop).
	Outgoing *backend.Outgoing
}

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

// Server dispatches connections from any number of listeners.
type Server struct {
	cfg       Config
	slots     chan struct{} // one token per allowed concurrent connection
	adm       *admission
	peekBufs  sync.Pool
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*record]struct{}
	shutdown  bool
	engine    *relay.Engine
	active    sync.WaitGroup
	ctx       context.Context // cancelled when connections are cut
	cut       context.CancelFunc
	fdFloor   int // descriptors from here on are the reserve
	// The dialer's descriptor forms, if it has them: dispatchNow connects
	// with fdDialer in the accept loop (unix mode), with connFDDialer in a
	// goroutine (tcp, nat46).
	fdDialer     backend.FDDialer
	connFDDialer backend.ConnFDDialer

	// peekBudget bounds the general path's peek buffers together.
	peekBudget *peek.Budget
}

// fdReserve is how many descriptors the accept loop leaves unused even
// when -max-conns does not bound connections: a connection whose backend
// socket would take one of them is refused (internal_error), so that the
// metrics endpoint, the relay's pipes and the log keep working.
const fdReserve = 16

// New returns a Server for cfg, with its relay event loops started.
func New(cfg Config) (*Server, error) {
	if cfg.HelloLimit == 0 {
		cfg.HelloLimit = clienthello.DefaultLimit
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	engine, err := relay.NewEngineWithPipes(0, maxPipes())
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, listeners: map[net.Listener]struct{}{}, conns: map[*record]struct{}{}, engine: engine}
	if cfg.MaxConns > 0 {
		s.slots = make(chan struct{}, cfg.MaxConns)
	}
	s.adm = newAdmission(cfg.MaxConnsPerClient)
	s.fdFloor = math.MaxInt
	if limit, ok := fdLimit(); ok {
		s.fdFloor = limit - fdReserve
	}
	s.fdDialer, _ = cfg.Dialer.(backend.FDDialer)
	s.connFDDialer, _ = cfg.Dialer.(backend.ConnFDDialer)
	s.peekBufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	s.peekBudget = newPeekBudget(cfg.PeekBudget, cfg.Observer)
	s.ctx, s.cut = context.WithCancel(context.Background())
	return s, nil
}

// DefaultMaxConns is a bound on concurrent connections derived from the
// file descriptor limit: each relayed connection holds
// relay.DescriptorsPerConn descriptors (its two sockets), the relay's
// splice pipes, in use and pooled, are bounded in all (maxPipes), and a
// few are kept for listeners, metrics and logs. Staying below the limit
// keeps excess clients waiting in the kernel's queue instead of failing
// accept or a backend connection.
func DefaultMaxConns() int {
	limit, ok := fdLimit()
	if !ok {
		return 0
	}
	return max((limit-64-relay.PipeDescriptors(maxPipes()))/relay.DescriptorsPerConn, 16)
}

// maxPipes bounds the relay's pipes for this process's descriptor limit.
func maxPipes() int {
	if limit, ok := fdLimit(); ok {
		return relay.MaxPipes(limit)
	}
	return relay.DefaultMaxPipes
}

// fdLimit returns the open file limit, unless it is unknown or so large
// that it bounds nothing.
func fdLimit() (int, bool) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 0, false
	}
	return int(lim.Cur), true
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("dispatch: server closed")

// Serve accepts connections on ln and dispatches each in its own
// goroutine until Shutdown, when it returns ErrServerClosed. Temporary
// accept errors (out of file descriptors, for one) back off and retry
// instead of spinning or giving up.
func (s *Server) Serve(ln net.Listener) error {
	if !s.track(ln) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.untrack(ln)
	if tl, ok := ln.(*net.TCPListener); ok {
		tuneListener(tl)
		return s.serveFDs(tl)
	}
	var backoff listener.Backoff
	for {
		held := s.trySlot() // if not, room is made once a connection is there
		c, err := ln.Accept()
		if err != nil {
			if end, err := s.acceptFailed(ln, err, &backoff, held); end {
				return err
			}
			continue
		}
		backoff.Reset()
		r := &record{start: time.Now(), client: c.RemoteAddr(), local: c.LocalAddr(), closer: c}
		if !s.admitConn(r, held, c) {
			continue
		}
		if !s.trackConn(r) {
			// Accepted after the shutdown timeout cut everything.
			c.Close()
			s.release()
			return ErrServerClosed
		}
		s.adm.startPeek(r, c)
		go s.handle(c, r)
	}
}

// serveFDs is Serve's accept loop for a TCP listener. Connections are
// accepted with accept4, outside the runtime's poller, and most are
// dispatched by dispatchNow without the runtime ever registering their
// sockets, and in unix mode right here, without a goroutine of their own:
// under connection load, the goroutines, wake-ups and poller
// registrations per connection cost more CPU than the relaying. The rest
// go to the general path (run).
func (s *Server) serveFDs(ln *net.TCPListener) error {
	// A net.TCPListener's own raw connection cannot wait for readiness,
	// an *os.File can: accept on a duplicate of the listening socket,
	// closed with the listener, which is what stops a Serve.
	f, err := ln.File()
	if err != nil {
		return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
	fl := fileListener{ln, f}
	if !s.replaceListener(ln, fl) {
		f.Close()
		return ErrServerClosed
	}
	defer func() {
		f.Close()
		s.mu.Lock()
		delete(s.listeners, fl)
		s.mu.Unlock()
	}()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
	var backoff listener.Backoff
	for {
		held := s.trySlot() // if not, room is made once a connection is there
		var fd int
		var client *net.TCPAddr
		var aerr error
		err := rc.Read(func(lfd uintptr) bool {
			for {
				fd, client, aerr = rawsys.Accept4(int(lfd))
				switch aerr {
				case syscall.EINTR, syscall.ECONNABORTED:
					continue // as net.TCPListener.Accept does
				case syscall.EAGAIN:
					return false // wait for the next connection
				}
				return true
			}
		})
		if err == nil {
			err = aerr
		}
		if err != nil {
			if end, err := s.acceptFailed(ln, err, &backoff, held); end {
				return err
			}
			continue
		}
		backoff.Reset()
		r := &record{start: time.Now(), client: client}
		if !s.admitConn(r, held, fdCloser(fd)) {
			continue
		}
		if !s.trackConn(r) {
			rawsys.Close(fd)
			s.release()
			return ErrServerClosed
		}
		if s.cfg.Observer != nil {
			s.cfg.Observer.Accepted()
		}
		if done, exhausted := s.dispatchNow(fd, r); done {
			if exhausted != nil {
				// Accepting more now would only take the descriptors
				// others (the metrics endpoint, a relay needing a
				// pipe) wait for.
				backoff.Wait(ln, exhausted, s.cfg.Log)
			}
			continue
		}
		c, err := fdConn(fd)
		if err != nil {
			s.finish(r, OutcomeRelayError, fmt.Errorf("accepted connection: %w", err))
			backoff.Wait(ln, err, s.cfg.Log) // out of descriptors, as above
			continue
		}
		r.local = c.LocalAddr()
		s.setCloser(r, c)
		s.adm.startPeek(r, c)
		go s.run(c, r)
	}
}

// tuneListener sets what every connection accepted from a TCP listener
// should have, on the listening socket itself, inherited ones included.
//
// TCP_DEFER_ACCEPT asks the kernel to wake the accept only once a
// connection's first bytes arrived: a TLS client speaks first, so its
// hello is usually whole when accept returns, and is peeked at once
// instead of being waited for. A client that sends nothing is accepted
// after about a second anyway, and then has -peek-timeout like any other.
//
// TCP_NODELAY, because Nagle's algorithm would hold back the small records
// of a TLS handshake. Go sets it on every connection it accepts; accepted
// sockets inherit it from the listener, which saves that system call on
// every connection of the fast path.
//
// Failing to set either costs speed, not correctness.
func tuneListener(ln *net.TCPListener) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1)
		rawsys.SetNoDelay(int(fd))
	})
}

// fileListener is a listener and the duplicate of its socket that
// serveFDs waits on: closing it closes both.
type fileListener struct {
	*net.TCPListener
	f *os.File
}

func (l fileListener) Close() error {
	l.f.Close()
	return l.TCPListener.Close()
}

// replaceListener swaps what Shutdown closes to stop a Serve, unless
// Shutdown already began.
func (s *Server) replaceListener(old, ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	delete(s.listeners, old)
	s.listeners[ln] = struct{}{}
	return true
}

// dispatchNow relays the connection on fd, or hands it off, right away if
// that needs no waiting and nothing unusual: the whole hello has arrived
// (with TCP_DEFER_ACCEPT it usually has when the connection is accepted),
// names a valid host, and its backend socket accepts. With a dialer that
// may wait (DNS and TCP in the tcp modes), the rest goes to a goroutine,
// dialAndRelay, and the client's socket stays outside the runtime all the
// same; a dialer with neither descriptor form leaves every connection to
// the general path. It reports false,
// having changed nothing, for anything else (a hello still on its way, a
// client to refuse, a trusted front, a full queue), which the caller then
// hands to the general path, where it can wait and explain. The exception
// is running out of descriptors, where the general path would need one
// more: the client is refused at once, and the error returned.
func (s *Server) dispatchNow(fd int, r *record) (done bool, exhausted error) {
	if s.cfg.TrustedFronts.Contains(r.client) {
		return false, nil
	}
	bufp := s.peekBufs.Get().(*[]byte)
	defer s.peekBufs.Put(bufp)
	info, hello, err := clienthello.PeekNow(fd, (*bufp)[:0], s.cfg.HelloLimit)
	if err != nil {
		return false, nil
	}
	// What clienthello.Route accepts without a second look; the rest (a
	// refusal, an invalid name routed by -default-hostname and logged as
	// sent) takes the general path.
	name := s.cfg.DefaultHostname
	if raw := info.ServerName(); raw != "" {
		if name, err = hostname.Canonical(raw); err != nil {
			return false, nil
		}
	} else if name == "" {
		return false, nil
	}
	peeked := time.Since(r.start)
	if s.fdDialer == nil {
		if s.connFDDialer == nil {
			return false, nil
		}
		r.peek = peeked
		go s.dialAndRelay(fd, r, name, info.ALPN(), info.Length)
		return true, nil
	}
	bfd, b, err := s.fdDialer.DialFD(backend.Request{Name: name, ALPN: info.ALPN(), Client: r.client})
	if err == nil && bfd >= s.fdFloor {
		// Into the last descriptors: those are kept for the metrics
		// endpoint, pipes and logs, which must work under overload.
		rawsys.Close(bfd)
		err = fmt.Errorf("%w: keeping the last %d descriptors in reserve", syscall.EMFILE, fdReserve)
	}
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		// Out of descriptors: the general path would need one more.
		// Refuse now, which frees this one at once.
		r.sni = name
		refuseNow(fd, info.Length, clienthello.AlertInternalError)
		s.finish(r, OutcomeBackendError, err)
		return true, err
	}
	if err != nil {
		return false, nil
	}
	connected := time.Since(r.start) - peeked
	if b.Handoff {
		if handoff.SendFD(b.Backend, fd, handoff.Message{SNI: name}) != nil {
			return false, nil // the general path waits, or explains
		}
		rawsys.Close(fd)
		r.sni, r.backend, r.backendName, r.peek, r.connect = name, b.Backend, b.Name, peeked, connected
		s.finish(r, OutcomeHandoff, nil)
		return true, nil
	}
	r.peek, r.connect = peeked, connected
	if !s.relayFDs(fd, bfd, b, r, name, len(hello)) {
		rawsys.Close(bfd)
		return false, nil
	}
	return true, nil
}

// relayFDs sends the PROXY header (if configured) and the client's hello
// (helloLen bytes, already here) to the connected backend bfd in one
// write, then gives both sockets to the relay. It reports false, with
// nothing read from the client and bfd left to the caller, only if the
// PROXY header could not be made; every other failure it answers itself
// (an alert to the client, the log line).
func (s *Server) relayFDs(fd, bfd int, b backend.Conn, r *record, name string, helloLen int) bool {
	outp := s.peekBufs.Get().(*[]byte)
	defer s.peekBufs.Put(outp)
	out := (*outp)[:0]
	if s.cfg.ProxyHeader != 0 {
		var ok bool
		if out, ok = s.appendProxyHeaderFD(out, fd, r, name); !ok {
			return false
		}
	}
	r.sni, r.backend, r.backendName = name, b.Backend, b.Name
	// Pass the hello on now, after the PROXY header and in the same
	// write, rather than wake a relay loop for it. From this read on the
	// client's bytes are on their way, and the connection can no longer
	// go back to the general path.
	header := len(out)
	out = append(out, make([]byte, helloLen)...)
	n, err := rawsys.Read(fd, out[header:])
	if err != nil {
		n = 0 // the relay reads them, or meets the error, itself
	}
	out = out[:header+n]
	w, err := rawsys.Send(bfd, out)
	switch {
	case err == syscall.EAGAIN:
		w = 0
	case err != nil:
		rawsys.Close(bfd)
		refuseNow(fd, 0, clienthello.AlertInternalError)
		s.finish(r, OutcomeBackendError, fmt.Errorf("%w: %s: send: %w", backend.ErrRefused, b.Backend, err))
		return true
	}
	*outp = out[:0]
	session, err := s.engine.StartFDs(fd, bfd, max(w-header, 0), out[w:], s.cfg.IdleTimeout, s.relayDone(r))
	if err != nil {
		rawsys.Close(bfd)
		refuseNow(fd, 0, clienthello.AlertInternalError)
		s.finish(r, OutcomeRelayError, err)
		return true
	}
	s.setCloser(r, session)
	return true
}

// dialAndRelay connects to the backend for the client on fd with the
// dialer that may wait (connFDDialer), then relays; the hello is still
// unread in fd. Failures are told to the client as in dispatch, through a
// net.Conn made then.
func (s *Server) dialAndRelay(fd int, r *record, name string, alpn []string, helloLen int) {
	if local, err := rawsys.Getsockname(fd); err == nil {
		r.local = local
	}
	bfd, b, err := s.dialFD(backend.Request{Name: name, ALPN: alpn, Client: r.client, Local: r.local}, r)
	if err == nil {
		if s.relayFDs(fd, bfd, b, r, name, helloLen) {
			return
		}
		rawsys.Close(bfd)
		err = fmt.Errorf("%w: %s: PROXY header", backend.ErrRefused, b.Backend)
	}
	r.sni = name
	c, cerr := fdConn(fd)
	if cerr != nil {
		s.finish(r, OutcomeBackendError, errors.Join(err, cerr))
		return
	}
	s.setCloser(r, c)
	outcome, alert := dialFailure(err)
	s.refuse(c, helloLen, alert)
	c.Close()
	s.finish(r, outcome, err)
}

// dialFD is dial returning a descriptor, with connFDDialer.
func (s *Server) dialFD(req backend.Request, r *record) (int, backend.Conn, error) {
	if err := s.checkLoop(r); err != nil {
		return -1, backend.Conn{}, err
	}
	ctx, cancel := s.connectContext()
	defer cancel()
	start := time.Now()
	fd, b, err := s.connFDDialer.DialFD(ctx, req)
	r.connect, r.outgoing = time.Since(start), b.Local
	return fd, b, err
}

// dial connects to the backend for req within -connect-timeout (cut short
// by the shutdown timeout), and times it in r.
func (s *Server) dial(req backend.Request, r *record) (backend.Conn, error) {
	if err := s.checkLoop(r); err != nil {
		return backend.Conn{}, err
	}
	ctx, cancel := s.connectContext()
	defer cancel()
	start := time.Now()
	b, err := s.cfg.Dialer.Dial(ctx, req)
	r.connect, r.outgoing = time.Since(start), b.Local
	return b, err
}

// connectContext is the context a backend connection is made in.
func (s *Server) connectContext() (context.Context, context.CancelFunc) {
	if s.cfg.ConnectTimeout > 0 {
		return context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
	}
	return s.ctx, func() {}
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

// refuseNow is refuse without waiting, for a socket outside the runtime:
// it consumes the hello (so that closing sends a FIN, not a reset that
// could destroy the alert), sends the alert and closes fd.
func refuseNow(fd, helloLen int, alert clienthello.Alert) {
	var buf [2048]byte
	for helloLen > 0 {
		n, err := rawsys.Read(fd, buf[:min(helloLen, len(buf))])
		if err != nil || n <= 0 {
			break
		}
		helloLen -= n
	}
	rec := alert.Record()
	rawsys.Send(fd, rec[:])
	rawsys.ShutdownWrite(fd)
	rawsys.Close(fd)
}

// appendProxyHeaderFD appends the PROXY header for the client on fd,
// asking the socket for the address it reached unless r has it already.
func (s *Server) appendProxyHeaderFD(out []byte, fd int, r *record, name string) ([]byte, bool) {
	if r.local == nil {
		local, err := rawsys.Getsockname(fd)
		if err != nil {
			return out, false
		}
		r.local = local
	}
	h, err := s.proxyHeader(r, name)
	if err != nil {
		return out, false
	}
	b, err := h.Format()
	if err != nil {
		return out, false
	}
	return append(out, b...), true
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

// fdConn makes a net.Conn of an accepted socket, taking over fd.
func fdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "client")
	defer f.Close()
	return net.FileConn(f)
}

// acceptFailed handles an error from accepting on ln: it frees the slot
// taken for the connection, if held, and reports whether the accept loop
// ends, and with what error (ErrServerClosed after Shutdown). Temporary
// errors back off and go on.
func (s *Server) acceptFailed(ln net.Listener, err error, backoff *listener.Backoff, held bool) (end bool, _ error) {
	if held {
		s.release()
	}
	if s.closing() {
		return true, ErrServerClosed
	}
	if !backoff.Wait(ln, err, s.cfg.Log) {
		return true, fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
	return false, nil
}

func (s *Server) release() {
	if s.slots != nil {
		<-s.slots
	}
}

// Shutdown stops accepting, waits for open connections to finish until ctx
// is done, then cuts the rest. It returns ctx's error if it had to cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.cut()
	s.mu.Lock()
	for r := range s.conns {
		if r.closer != nil {
			r.closer.Close()
		}
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// Close releases the relay's event loops; call it after Shutdown.
func (s *Server) Close() { s.engine.Close() }

// Active returns the number of connections being handled.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// track registers a listener being served. A Serve loop counts as active
// until it returns, so that Shutdown waits for it, and for a connection it
// accepted in the moment the listener was closed: that connection is
// served, not dropped (under socket activation, every connection the
// kernel queued is either served here or left queued for the next run).
func (s *Server) track(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.listeners[ln] = struct{}{}
	s.active.Add(1)
	return true
}

func (s *Server) untrack(ln net.Listener) {
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
	s.active.Done()
}

// trackConn registers an accepted connection, unless Shutdown has already
// cut every connection.
func (s *Server) trackConn(r *record) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.conns[r] = struct{}{}
	s.active.Add(1)
	return true
}

func (s *Server) untrackConn(r *record) {
	s.mu.Lock()
	delete(s.conns, r)
	s.mu.Unlock()
	s.active.Done()
}

// setCloser says what cutting the connection means from now on.
// If Shutdown has already cut the connections, it cuts this one too.
func (s *Server) setCloser(r *record, c io.Closer) {
	s.mu.Lock()
	r.closer = c
	cut := s.ctx.Err() != nil
	s.mu.Unlock()
	if cut {
		c.Close()
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
	closer        io.Closer // cuts the connection at the shutdown timeout; guarded by Server.mu
	adm           admitState
	// outgoing is our backend connection's local address, in
	// Config.Outgoing until the connection is finished.
	outgoing netip.AddrPort
}

// outcomeRelaying is what dispatch returns when the relay took over: the
// relay's completion finishes the record.
const outcomeRelaying Outcome = ""

// handle dispatches one connection. Unless the relay took it over, the
// connection is finished when handle returns.
func (s *Server) handle(c net.Conn, r *record) {
	if s.cfg.Observer != nil {
		s.cfg.Observer.Accepted()
	}
	s.run(c, r)
}

// run is handle for a connection already counted as accepted.
func (s *Server) run(c net.Conn, r *record) {
	outcome, err := s.dispatch(c, r)
	if outcome == outcomeRelaying {
		return
	}
	s.finish(r, outcome, err)
}

// finish logs and counts a connection that ended, and frees its slot.
func (s *Server) finish(r *record, outcome Outcome, err error) {
	outcome, err = s.adm.done(r, outcome, err)
	r.outcome, r.err = outcome, err
	if r.outcome == OutcomeRelayError && s.ctx.Err() != nil {
		r.outcome = OutcomeShutdown
	}
	s.log(r)
	if s.cfg.Observer != nil {
		s.cfg.Observer.Finished(Report{Outcome: r.outcome, Up: r.stats.Up, Down: r.stats.Down,
			Peek: r.peek, Connect: r.connect, Duration: time.Since(r.start), Backend: r.backendName})
	}
	s.forgetOutgoing(r)
	s.untrackConn(r)
	s.release()
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

// readFrontHeader takes the client's address from the PROXY header a
// trusted front sent, consuming exactly the header.
func (s *Server) readFrontHeader(c net.Conn, r *record) error {
	if s.cfg.PeekTimeout > 0 {
		c.SetReadDeadline(time.Now().Add(s.cfg.PeekTimeout))
	}
	h, err := proxyheader.Read(c)
	if err != nil {
		return fmt.Errorf("from trusted front %s: %w", r.client, err)
	}
	r.front, r.client, r.local = r.client, h.SourceAddr, h.DestinationAddr
	return nil
}

// dispatch does the work for one connection and closes it.
func (s *Server) dispatch(c net.Conn, r *record) (Outcome, error) {
	defer c.Close()
	// The peer's address as accept saw it: asked again now, the socket
	// of a peer that already reset it (as HAProxy ends its health
	// checks) would have none.
	if s.cfg.TrustedFronts.Contains(r.client) {
		if err := s.readFrontHeader(c, r); err != nil {
			if errors.Is(err, proxyheader.ErrLocal) {
				// The PROXY protocol's way for a balancer to check
				// that we are up: answered by accepting, then closed.
				return OutcomeHealthCheck, nil
			}
			return OutcomeProxyHeader, err
		}
	}
	name, alpn, helloLen, outcome, err := s.peekName(c, r)
	r.peek = time.Since(r.start)
	if s.adm.endPeek(r) {
		return OutcomeEvicted, errEvicted
	}
	if err != nil {
		return outcome, err
	}
	b, err := s.dial(backend.Request{Name: name, ALPN: alpn, Client: r.client, Local: r.local}, r)
	if err != nil {
		outcome, alert := dialFailure(err)
		s.refuse(c, helloLen, alert)
		return outcome, err
	}
	r.backend, r.backendName = b.Backend, b.Name
	if b.Handoff {
		return s.handOff(c, r, name, helloLen)
	}
	if err := s.sendProxyHeader(b, r, name); err != nil {
		b.Close()
		s.refuse(c, helloLen, clienthello.AlertInternalError)
		return OutcomeBackendError, err
	}
	// From here the relay's event loops own both sockets; no goroutine
	// waits for this connection.
	session, err := s.engine.Start(c, b.Conn, s.cfg.IdleTimeout, s.relayDone(r))
	if err != nil {
		// Out of descriptors, most likely: the hello is still unread,
		// so the client can be told, rather than reset.
		b.Close()
		s.refuse(c, helloLen, clienthello.AlertInternalError)
		return OutcomeRelayError, err
	}
	s.setCloser(r, session)
	return outcomeRelaying, nil
}

// handOff passes the client's socket itself to the backend listening on
// the SOCK_SEQPACKET socket at path (lib/handoff), the hello still unread
// in it. Afterwards this process holds nothing of the connection.
func (s *Server) handOff(c net.Conn, r *record, name string, helloLen int) (Outcome, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		s.refuse(c, helloLen, clienthello.AlertInternalError)
		return OutcomeBackendError, fmt.Errorf("handoff to %s: only TCP connections can be handed off, not %T", r.backend, c)
	}
	c.SetReadDeadline(time.Time{})
	m := handoff.Message{SNI: name}
	if r.front != nil {
		// The socket's peer is the front; pass on who the client is.
		if ta, ok := r.client.(*net.TCPAddr); ok {
			m.Client = ta.AddrPort()
		}
	}
	if err := handoff.SendMessage(r.backend, tc, m); err != nil {
		s.refuse(c, helloLen, clienthello.AlertInternalError)
		return OutcomeBackendError, err
	}
	return OutcomeHandoff, nil
}

// peekName peeks at the ClientHello and returns the canonical name to
// route by, the offered ALPN protocols and the hello's length on the wire.
// On failure it has already told the client (alert) where that is due.
func (s *Server) peekName(c net.Conn, r *record) (name string, alpn []string, helloLen int, _ Outcome, _ error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return "", nil, 0, OutcomeNotTLS, fmt.Errorf("connection type %T cannot be peeked", c)
	}
	if s.cfg.PeekTimeout > 0 {
		c.SetReadDeadline(time.Now().Add(s.cfg.PeekTimeout))
	}
	bufp := s.peekBufs.Get().(*[]byte)
	info, buf, err := clienthello.PeekBudget(sc, (*bufp)[:0], s.cfg.HelloLimit, s.peekBudget)
	defer func() {
		if cap(buf) <= 64<<10 {
			*bufp = buf[:0]
			s.peekBufs.Put(bufp)
		}
	}()
	if err != nil {
		// Each case answered as a TLS server would (lib/clienthello).
		v := clienthello.PeekVerdict(err)
		s.refuse(c, len(buf), v.Alert)
		return "", nil, 0, Outcome(v.Outcome), err
	}
	// With Encrypted Client Hello the name seen here is the outer, public
	// name of the ECH configuration: routing by it is exactly right.
	name, v, err := clienthello.Route(&info, s.cfg.DefaultHostname)
	r.sni = name
	if raw := info.ServerName(); raw != "" && (err != nil || name == s.cfg.DefaultHostname) {
		if _, cerr := hostname.Canonical(raw); cerr != nil {
			r.sni = truncate(raw, 255) // invalid: refused, or routed by -default-hostname
		}
	}
	if err != nil {
		s.refuse(c, info.Length, v.Alert)
		return "", nil, 0, Outcome(v.Outcome), err
	}
	return name, info.ALPN(), info.Length, OutcomeOK, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// sendProxyHeader writes the PROXY protocol header, if configured, to the
// backend: the client's and the local address and, in version 2, the
// server name as a PP2_TYPE_AUTHORITY TLV.
func (s *Server) sendProxyHeader(b net.Conn, r *record, name string) error {
	if s.cfg.ProxyHeader == 0 {
		return nil
	}
	h, err := s.proxyHeader(r, name)
	if err != nil {
		return err
	}
	if s.cfg.ConnectTimeout > 0 {
		b.SetWriteDeadline(time.Now().Add(s.cfg.ConnectTimeout))
		defer b.SetWriteDeadline(time.Time{})
	}
	if _, err := h.WriteTo(b); err != nil {
		return fmt.Errorf("send PROXY header: %w", err)
	}
	return nil
}

// proxyHeader is the PROXY header for r's client.
func (s *Server) proxyHeader(r *record, name string) (*proxyproto.Header, error) {
	h := proxyproto.HeaderProxyFromAddrs(s.cfg.ProxyHeader, r.client, r.local)
	if s.cfg.ProxyHeader == 2 {
		if err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(name)}}); err != nil {
			return nil, fmt.Errorf("PROXY header TLV: %w", err)
		}
	}
	return h, nil
}

// refuse tells a TLS client why it is not served (clienthello.Refuse): it
// first consumes the hello it peeked (helloLen bytes), so that closing does
// not turn into a reset that could destroy the alert before the client
// reads it, then sends the alert (if any), half-closes and waits briefly
// for the client to close.
func (s *Server) refuse(c net.Conn, helloLen int, alert clienthello.Alert) {
	clienthello.Refuse(c, helloLen, alert)
}

func (s *Server) log(r *record) {
	if s.cfg.Quiet || r.outcome == OutcomeHealthCheck {
		return // health checks come every few seconds: counted, not logged
	}
	attrs := []slog.Attr{
		slog.String("client", addrString(r.client)),
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

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
