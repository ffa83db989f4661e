package quicdispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/dispatch"
	"github.com/snitools/snitools/lib/quic"
	"github.com/snitools/snitools/lib/quicflow"
	"golang.org/x/sys/unix"
)

// A Dialer gives a flow a UDP socket connected to its backend.
// backend.TCP is one (tcp and nat46 modes).
type Dialer interface {
	DialUDP(ctx context.Context, req backend.Request) (*net.UDPConn, backend.Conn, error)
}

// Observer is told about flows and dropped datagrams, for metrics. Its
// methods are called from many goroutines at once.
type Observer interface {
	// Started counts a flow routed to a backend (or refused one).
	Started()
	// Finished counts a flow that ended.
	Finished(Report)
	// Dropped counts a datagram that started or fed no flow; reason is
	// one of DropReasons.
	Dropped(reason string)
}

// Report is what an Observer learns about a finished flow.
type Report struct {
	Outcome dispatch.Outcome
	// Up and Down count bytes of datagrams (UDP payload), client to
	// backend and back; DatagramsUp and DatagramsDown count datagrams.
	Up, Down                   int64
	DatagramsUp, DatagramsDown int64
	// Hello is the time from the first datagram to a whole ClientHello,
	// Connect the time to find the backend, Duration the whole flow.
	Hello, Connect, Duration time.Duration
	// Backend names the backend for metrics (an address), "" if none.
	Backend string
}

// Config is what a Server needs.
type Config struct {
	// Dialer finds and connects to the backend of a name.
	Dialer Dialer
	// DefaultHostname (canonical) stands in for a missing or invalid
	// server name, as for TCP.
	DefaultHostname string
	// ConnectTimeout bounds finding the backend (DNS and the socket).
	ConnectTimeout time.Duration
	// Flows bounds the flow table (lib/quicflow; zero fields take its
	// defaults).
	Flows quicflow.Config
	// Log gets one line per flow unless Quiet.
	Log   *slog.Logger
	Quiet bool
	// Observer, if set, is told about flows and drops.
	Observer Observer
	// Outgoing, if set, holds the local addresses of the flows' backend
	// sockets: a flow whose client is one of them came from ourselves
	// (a name that leads back here past the allow list's route check,
	// such as through a DNAT rule) and is refused with outcome loop.
	// It must not be the TCP dispatcher's set: the port spaces differ.
	Outgoing *backend.Outgoing
}

// DefaultMaxFlows is the default bound on routed flows for this
// process's descriptor limit: each holds a socket, so at most an eighth
// of the limit (the TCP connections of lib/dispatch take most of the
// rest), and never more than quicflow.DefaultMaxRouted; at least 16.
func DefaultMaxFlows() int {
	limit, ok := dispatch.FDLimit()
	if !ok {
		return quicflow.DefaultMaxRouted
	}
	return max(min(limit/8, quicflow.DefaultMaxRouted), 16)
}

// SocketBuffer is the receive and send buffer asked for each listening
// UDP socket (capped by net.core.rmem_max and wmem_max unless snilisten
// may force it: root or CAP_NET_ADMIN).
const SocketBuffer = 4 << 20

// Server serves QUIC flows on UDP sockets.
type Server struct {
	cfg   Config
	ctx   context.Context // cancelled by Shutdown
	stop  context.CancelFunc
	mu    sync.Mutex // guards table, socks, flows
	table *quicflow.Table
	socks map[*net.UDPConn]bool
	flows map[*flow]bool // routed flows with a backend, for Shutdown
	wg    sync.WaitGroup // read loops, routing goroutines and flows
	start sync.Once      // the expiry ticker
	noGSO atomic.Bool    // the kernel refused UDP_SEGMENT once: send datagrams one by one
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Dialer == nil {
		return nil, errors.New("quicdispatch: no Dialer")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Server{cfg: cfg, ctx: ctx, stop: stop, table: quicflow.New(cfg.Flows),
		socks: map[*net.UDPConn]bool{}, flows: map[*flow]bool{}}, nil
}

// Serve reads datagrams from pc until pc is closed or Shutdown is called;
// it then returns nil. It closes pc when it returns.
func (s *Server) Serve(pc *net.UDPConn) error {
	defer pc.Close()
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		return nil
	}
	s.socks[pc] = true
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.start.Do(func() { s.wg.Add(1); go s.expireLoop() })

	kind, err := enablePktinfo(pc)
	if err != nil {
		return fmt.Errorf("udp %s: %w", pc.LocalAddr(), err)
	}
	rc, err := pc.SyscallConn()
	if err != nil {
		return fmt.Errorf("udp %s: %w", pc.LocalAddr(), err)
	}
	// Every client's datagrams queue on this one socket: the default
	// buffer (about 200 KiB) overflows in a burst of a few hundred
	// datagrams. Without CAP_NET_ADMIN the kernel caps what is asked at
	// net.core.rmem_max and wmem_max; failing that, the default stays.
	rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], SocketBuffer) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], SocketBuffer)
			}
		}
	})
	batch := newBatchReader()
	var readErr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, err := batch.read(fd)
			switch {
			case err == unix.EAGAIN:
				return false // wait on the poller
			case err == unix.EINTR, err != nil && temporary(err):
				continue
			case err != nil:
				readErr = err
				return true
			}
			now := time.Now()
			for i := range n {
				data, oob, from, truncated := batch.datagram(i)
				if truncated {
					s.dropped("other")
					continue
				}
				s.handle(pc, kind, now, from, data, oob)
			}
		}
	})
	switch {
	case readErr != nil:
		return fmt.Errorf("udp %s: read: %w", pc.LocalAddr(), readErr)
	case err == nil, s.ctx.Err() != nil, errors.Is(err, net.ErrClosed):
		return nil
	}
	return fmt.Errorf("udp %s: read: %w", pc.LocalAddr(), err)
}

// handle does what the flow table says with one datagram from a client.
// It runs on the read loop, so it never waits: a flow is routed in a
// goroutine of its own.
func (s *Server) handle(pc *net.UDPConn, kind socketKind, now time.Time, from netip.AddrPort, data, oob []byte) {
	s.mu.Lock()
	r := s.table.Handle(now, from, data)
	s.mu.Unlock()
	switch r.Verdict {
	case quicflow.Drop:
		s.dropped(DropReason(r.Err))
	case quicflow.Route:
		local := localAddr(pc, kind, oob)
		f := &flow{s: s, pc: pc, client: from, local: local, start: now, helloTime: now.Sub(r.First), hello: r.Hello, oob: replyPktinfo(kind, local)}
		s.wg.Add(1)
		go f.route(r.Datagrams)
	case quicflow.Forward:
		r.Backend.(*flow).forward(data)
	}
}

// dropped tells the observer of a dropped datagram.
func (s *Server) dropped(reason string) {
	if s.cfg.Observer != nil {
		s.cfg.Observer.Dropped(reason)
	}
}

// temporary reports a read error worth going on after: an ICMP error
// queued on the socket (ECONNREFUSED after a reply to a client that
// left), or a lack of memory.
func temporary(err error) bool {
	return errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM)
}

// expireLoop ends idle flows and forgets stale pending ones, once a
// second, until Shutdown.
func (s *Server) expireLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-tick.C:
			var idle []*flow
			s.mu.Lock()
			s.table.Expire(now, func(_ netip.AddrPort, b any) { idle = append(idle, b.(*flow)) })
			s.mu.Unlock()
			for _, f := range idle {
				f.end(dispatch.OutcomeOK, nil)
			}
		}
	}
}

// Active returns the number of flows routing or routed.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.flows)
}

// Shutdown closes the UDP sockets and ends every flow (see the package
// documentation for why flows are not drained), and waits for them to be
// logged, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stop()
	socks := make([]*net.UDPConn, 0, len(s.socks))
	for pc := range s.socks {
		socks = append(socks, pc)
	}
	flows := make([]*flow, 0, len(s.flows))
	for f := range s.flows {
		flows = append(flows, f)
	}
	s.mu.Unlock()
	// Closed without the lock: Close waits for the read loop to let go
	// of the socket, and the read loop takes the lock for each datagram
	// it holds.
	for _, pc := range socks {
		pc.Close()
	}
	for _, f := range flows {
		f.end(dispatch.OutcomeShutdown, nil)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns the flow table's counts, for gauges.
func (s *Server) Stats() quicflow.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.table.Stats()
}

// DropReasons lists every reason Dropped is given, for metrics that
// must know them up front.
func DropReasons() []string {
	return []string{"not_quic", "unknown_version", "undecryptable", "malformed", "rate", "client_limit", "pending_full",
		"budget", "routed_full", "limit", "protocol", "duplicate", "other"}
}

// DropReason names why a datagram was dropped, from the error
// quicflow.Table.Handle gave.
func DropReason(err error) string {
	switch {
	case errors.Is(err, quic.ErrNotInitial):
		return "not_quic"
	case errors.Is(err, quic.ErrUnknownVersion):
		return "unknown_version"
	case errors.Is(err, quic.ErrDecrypt):
		return "undecryptable"
	case errors.Is(err, quic.ErrMalformed):
		return "malformed"
	case errors.Is(err, quicflow.ErrRate):
		return "rate"
	case errors.Is(err, quicflow.ErrClientFlows):
		return "client_limit"
	case errors.Is(err, quicflow.ErrPendingFull):
		return "pending_full"
	case errors.Is(err, quicflow.ErrBudget):
		return "budget"
	case errors.Is(err, quicflow.ErrRoutedFull):
		return "routed_full"
	case errors.Is(err, quic.ErrLimit), errors.Is(err, quic.ErrExpired):
		return "limit"
	case errors.Is(err, quic.ErrProtocol), errors.Is(err, quic.ErrClosed), errors.Is(err, clienthello.ErrMalformed):
		return "protocol"
	case errors.Is(err, quicflow.ErrDuplicate):
		return "duplicate"
	}
	return "other"
}
