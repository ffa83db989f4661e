package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/listener"
	"github.com/snitools/snitools/lib/proxyheader"
	"github.com/snitools/snitools/lib/rawsys"
	"github.com/snitools/snitools/lib/relay"
	"github.com/snitools/snitools/lib/sockpeek"
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

// Server dispatches connections from any number of listeners.
type Server struct {
	cfg      Config
	group    *listener.Group[*record] // listeners, connections, slots
	adm      *admission
	peekBufs sync.Pool
	engine   *relay.Engine
	ctx      context.Context // cancelled when connections are cut
	cut      context.CancelFunc
	fdFloor  int // descriptors from here on are the reserve
	// The dialer's descriptor forms, if it has them: dispatchNow connects
	// with fdDialer in the accept loop (unix mode), with connFDDialer in a
	// goroutine (tcp, nat46).
	fdDialer     backend.FDDialer
	connFDDialer backend.ConnFDDialer

	// peekBudget bounds the general path's peek buffers together.
	peekBudget *sockpeek.Budget
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
	s := &Server{cfg: cfg, engine: engine}
	s.group = listener.NewGroup[*record](cfg.MaxConns, listener.ServeAccepted)
	s.adm = newAdmission(cfg.MaxConnsPerClient)
	s.fdFloor = math.MaxInt
	if limit, ok := FDLimit(); ok {
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
	limit, ok := FDLimit()
	if !ok {
		return 0
	}
	return max((limit-64-relay.PipeDescriptors(maxPipes()))/relay.DescriptorsPerConn, 16)
}

// maxPipes bounds the relay's pipes for this process's descriptor limit.
func maxPipes() int {
	if limit, ok := FDLimit(); ok {
		return relay.MaxPipes(limit)
	}
	return relay.DefaultMaxPipes
}

// FDLimit returns the open file limit, unless it is unknown or so large
// that it bounds nothing: what the default bounds of connections (and of
// lib/quicdispatch's flows) are derived from.
func FDLimit() (int, bool) {
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
	if !s.group.Track(ln) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.group.Untrack(ln)
	if tl, ok := ln.(*net.TCPListener); ok {
		tuneListener(tl)
		return s.serveFDs(tl)
	}
	var backoff listener.Backoff
	for {
		held := s.group.TrySlot() // if not, room is made once a connection is there
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
			s.group.ReleaseSlot()
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
	if !s.group.Replace(ln, fileListener{ln, f}) {
		f.Close()
		return ErrServerClosed
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
	var backoff listener.Backoff
	for {
		held := s.group.TrySlot() // if not, room is made once a connection is there
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
			s.group.ReleaseSlot()
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
		s.group.ReleaseSlot()
	}
	if s.group.Closing() {
		return true, ErrServerClosed
	}
	if !backoff.Wait(ln, err, s.cfg.Log) {
		return true, fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
	return false, nil
}

// Shutdown stops accepting, waits for open connections to finish until ctx
// is done, then cuts the rest. It returns ctx's error if it had to cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.group.Stop()
	if s.group.Wait(ctx) == nil {
		return nil
	}
	s.cut()
	s.group.Cut(func(r *record) {
		if r.closer != nil {
			r.closer.Close()
		}
	})
	return ctx.Err()
}

// Close releases the relay's event loops; call it after Shutdown.
func (s *Server) Close() { s.engine.Close() }

// Active returns the number of connections being handled.
func (s *Server) Active() int { return s.group.Len() }

// trackConn registers an accepted connection, unless Shutdown has already
// cut every connection. A Serve loop itself counts as active
// (listener.ServeAccepted), so that Shutdown waits for it, and for a
// connection it accepted in the moment the listener was closed: that
// connection is served, not dropped.
func (s *Server) trackConn(r *record) bool { return s.group.Add(r, nil) }

func (s *Server) untrackConn(r *record) { s.group.Remove(r, nil) }

// setCloser says what cutting the connection means from now on.
// If Shutdown has already cut the connections, it cuts this one too.
func (s *Server) setCloser(r *record, c io.Closer) {
	if !s.group.BeforeCut(func() { r.closer = c }) {
		c.Close()
	}
}
