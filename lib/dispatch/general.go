package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/handoff"
	"github.com/snitools/snitools/lib/hostname"
	"github.com/snitools/snitools/lib/logging"
	"github.com/snitools/snitools/lib/proxyheader"
)

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
	r.chose(b)
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
			r.sni = logging.Truncate(raw, 255) // invalid: refused, or routed by -default-hostname
		}
	}
	if err != nil {
		s.refuse(c, info.Length, v.Alert)
		return "", nil, 0, Outcome(v.Outcome), err
	}
	return name, info.ALPN(), info.Length, OutcomeOK, nil
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
