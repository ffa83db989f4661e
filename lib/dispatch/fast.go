package dispatch

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/handoff"
	"github.com/snitools/snitools/lib/hostname"
	"github.com/snitools/snitools/lib/rawsys"
)

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
	bfd, b, err := s.fdDialer.DialNow(backend.Request{Name: name, ALPN: info.ALPN(), Client: r.client})
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
		s.failNow(fd, info.Length, r, OutcomeBackendError, err)
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
		r.sni, r.peek, r.connect = name, peeked, connected
		r.chose(b)
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
	r.sni = name
	r.chose(b)
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
		s.failNow(fd, 0, r, OutcomeBackendError, fmt.Errorf("%w: %s: send: %w", backend.ErrRefused, b.Backend, err))
		return true
	}
	*outp = out[:0]
	session, err := s.engine.StartFDs(fd, bfd, max(w-header, 0), out[w:], s.cfg.IdleTimeout, s.relayDone(r))
	if err != nil {
		rawsys.Close(bfd)
		s.failNow(fd, 0, r, OutcomeRelayError, err)
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

// failNow ends a connection the fast path took but cannot serve (out of
// descriptors, a backend that would not take the hello, a relay that
// would not start): the client gets internal_error (refuseNow), the
// record its outcome (finish), as dispatch's refuse and return does on
// the general path.
func (s *Server) failNow(fd, helloLen int, r *record, outcome Outcome, err error) {
	refuseNow(fd, helloLen, clienthello.AlertInternalError)
	s.finish(r, outcome, err)
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
