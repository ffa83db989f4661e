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
	"github.com/snitools/snitools/lib/logging"
	"golang.org/x/sys/unix"
)

// touchEvery is how often at most a flow's answers mark it used in the
// table.
const touchEvery = 100 * time.Millisecond

// flow is one client's QUIC connection, from the Route verdict to its
// end: routing first (route), then relaying the backend's answers
// (replies) while the read loop forwards the client's datagrams.
type flow struct {
	s      *Server
	pc     *net.UDPConn   // the socket the client sent to; answers leave by it
	client netip.AddrPort // as the socket reported it (IPv4-mapped on a dual-stack socket)
	local  netip.AddrPort // the address the client sent to
	oob    []byte         // IP_PKTINFO or IPV6_PKTINFO that sends from local; nil if pc has one address
	start  time.Time      // the datagram that completed the hello
	// helloTime is from the flow's first datagram to start.
	helloTime time.Duration
	hello     clienthello.Info

	sni, backendAddr, backendName string
	connect                       time.Duration
	backend                       *net.UDPConn   // set before the flow is routed, then fixed
	refused                       bool           // routed nowhere; set before the flow is routed
	outgoing                      netip.AddrPort // the backend socket's address in Config.Outgoing, if there

	up, down, datagramsUp, datagramsDown atomic.Int64

	segment    int    // the segment size segmentOOB is for; used by replies only
	segmentOOB []byte // oob and a UDP_SEGMENT control message

	endOnce sync.Once
	outcome dispatch.Outcome // set by end, read after the reader stopped
	err     error
}

// route finds the flow's backend, sends it the held datagrams, and then
// relays its answers until the flow ends.
func (f *flow) route(held [][]byte) {
	s := f.s
	defer s.wg.Done()
	if s.cfg.Observer != nil {
		s.cfg.Observer.Started()
	}
	f.sni = f.hello.ServerName()
	if s.cfg.Outgoing != nil && s.cfg.Outgoing.Contains(unmap(f.client)) {
		f.refuse(dispatch.OutcomeLoop, fmt.Errorf("flow from this proxy's own backend socket %s (a name that leads back here)", unmap(f.client)))
		return
	}
	name, verdict, err := clienthello.Route(&f.hello, s.cfg.DefaultHostname)
	if err != nil {
		f.refuse(dispatch.Outcome(verdict.Outcome), err)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
	conn, b, err := s.cfg.Dialer.DialUDP(ctx, backend.Request{
		Name: name, ALPN: f.hello.ALPN(),
		Client: net.UDPAddrFromAddrPort(unmap(f.client)), Local: net.UDPAddrFromAddrPort(f.local),
	})
	cancel()
	// The hello's fields point into the buffer it was assembled in, a
	// few KiB that a long flow need not keep.
	f.hello = clienthello.Info{}
	f.connect = time.Since(f.start)
	if err != nil {
		outcome := dispatch.DialOutcome(err)
		if s.ctx.Err() != nil {
			outcome = dispatch.OutcomeShutdown // the dial was cut by Shutdown
		}
		f.refuse(outcome, err)
		return
	}
	f.backend, f.backendAddr, f.backendName = conn, b.Backend, b.Name
	if s.cfg.Outgoing != nil {
		// Known before the first datagram leaves, so before a looping
		// one can come back.
		f.outgoing = unmap(conn.LocalAddr().(*net.UDPAddr).AddrPort())
		s.cfg.Outgoing.Add(f.outgoing)
	}
	for _, d := range held {
		f.forward(d)
	}
	s.mu.Lock()
	late, err := s.table.Routed(time.Now(), f.client, f)
	if err == nil && s.ctx.Err() == nil {
		s.flows[f] = true
	}
	s.mu.Unlock()
	switch {
	case s.ctx.Err() != nil:
		f.end(dispatch.OutcomeShutdown, nil)
	case err != nil:
		f.end(dispatch.OutcomeBackendError, fmt.Errorf("flow ended while its backend was found: %w", err))
	}
	for _, d := range late {
		f.forward(d)
	}
	f.replies()
}

// refuse ends a flow that has no backend, and sends its client nothing.
// The table keeps it, routed nowhere, for the answer timeout
// (quicflow.Config.AnswerTimeout): the client's retransmissions of the
// same hello (a QUIC client sends it again and again until its handshake
// times out) are dropped without another DNS lookup or log line.
func (f *flow) refuse(outcome dispatch.Outcome, err error) {
	f.refused = true
	f.s.mu.Lock()
	f.s.table.Routed(time.Now(), f.client, f)
	f.s.mu.Unlock()
	f.outcome, f.err = outcome, err
	f.report()
}

// forward sends a client's datagram to the backend. It runs on the read
// loop, so it never waits: a failure to send loses the datagram, as the
// network could, and a refusal (ICMP port unreachable) ends the flow.
func (f *flow) forward(d []byte) {
	if f.refused {
		return
	}
	n, err := f.backend.Write(d)
	if err != nil {
		if errors.Is(err, unix.ECONNREFUSED) {
			f.end(dispatch.OutcomeBackendError, fmt.Errorf("send to backend: %w", err))
		}
		return
	}
	f.up.Add(int64(n))
	f.datagramsUp.Add(1)
}

// end ends a routed flow once, with outcome unless it ended already: it
// closes the backend's socket, which stops replies.
func (f *flow) end(outcome dispatch.Outcome, err error) {
	if f.refused {
		return // reported when refused
	}
	f.endOnce.Do(func() {
		if outcome == dispatch.OutcomeOK && f.down.Load() == 0 {
			outcome, err = dispatch.OutcomeNoAnswer, errors.New("the backend never answered")
		}
		f.outcome, f.err = outcome, err
		f.backend.Close()
	})
}

// report writes the flow's log line and tells the observer, once it is
// over.
func (f *flow) report() {
	s := f.s
	if f.outgoing.IsValid() {
		s.cfg.Outgoing.Remove(f.outgoing)
	}
	if s.cfg.Observer != nil {
		s.cfg.Observer.Finished(Report{Outcome: f.outcome, Up: f.up.Load(), Down: f.down.Load(),
			DatagramsUp: f.datagramsUp.Load(), DatagramsDown: f.datagramsDown.Load(),
			Hello: f.helloTime, Connect: f.connect, Duration: time.Since(f.start), Backend: f.backendName})
	}
	if s.cfg.Quiet {
		return
	}
	attrs := []slog.Attr{
		slog.String("client", unmap(f.client).String()),
		slog.String("sni", logging.Truncate(f.sni, 255)),
		slog.String("backend", f.backendAddr),
		slog.Int64("up", f.up.Load()),
		slog.Int64("down", f.down.Load()),
		slog.Int64("datagrams_up", f.datagramsUp.Load()),
		slog.Int64("datagrams_down", f.datagramsDown.Load()),
		slog.Duration("duration", time.Since(f.start).Round(time.Microsecond)),
		slog.String("outcome", string(f.outcome)),
	}
	level := slog.LevelInfo
	if f.err != nil {
		attrs = append(attrs, slog.String("error", f.err.Error()))
		switch f.outcome {
		case dispatch.OutcomeBackendError, dispatch.OutcomeRelayError, dispatch.OutcomeNoAnswer:
			level = slog.LevelWarn
		}
	}
	s.cfg.Log.LogAttrs(context.Background(), level, "quic flow", attrs...)
}

// unmap returns ap with an IPv4-mapped address as IPv4.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
