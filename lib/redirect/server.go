// Package redirect is the heart of redirect80: a small, strict HTTP/1.1
// server that answers every request with a permanent redirect to https://
// the same host, path and query, and forwards ACME HTTP-01 challenges to
// the backend that owns the host.
//
// It parses requests itself rather than through net/http, so that the
// path and query reach Location byte for byte as the client sent them
// (net/http refuses some targets, such as a stray "%zz", and hides the
// raw framing), so that every refusal is answered and logged by the same
// code, and so that the per-request work stays a few appends into a
// buffer. It is bounded everywhere: the time and bytes a request header
// may take, the idle time between kept-alive requests, the connections in
// total and per client address; kept-alive connections that sit idle are
// closed first when the bound is reached.
package redirect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snitools/snitools/lib/clientkey"
	"github.com/snitools/snitools/lib/listener"
	"github.com/snitools/snitools/lib/proxyheader"
)

// Defaults for Config, also the flags' defaults.
const (
	DefaultHeaderTimeout     = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultMaxConnsPerClient = 256
)

// maxDiscard is the largest request body read and dropped to keep a
// connection alive; a larger one (or one of unknown length) is answered
// and the connection closed.
const maxDiscard = 64 << 10

// lingerTime and lingerBytes bound the draining of a connection being
// closed with request bytes unread, so that the response is not destroyed
// by a reset before the client reads it.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 256 << 10
)

// initialBuffer is the size a connection's read buffer starts at; it grows
// up to MaxHeaderBytes for larger headers.
const initialBuffer = 4 << 10

// Config says how a Server answers. Zero durations mean no limit.
type Config struct {
	// HeaderTimeout bounds the time from a request's first byte (or from
	// accept, for the first request) to the end of its header, as a
	// deadline that trickling bytes do not extend; it also bounds writing
	// the response and reading a body to discard.
	HeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection with no new request
	// for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and fields together
	// (DefaultMaxHeaderBytes if 0).
	MaxHeaderBytes int
	// MaxConns bounds concurrent connections; beyond it, idle kept-alive
	// connections are closed, then new ones wait in the kernel's accept
	// queue. 0 means no bound.
	MaxConns int
	// MaxConnsPerClient bounds concurrent connections from one IPv4
	// address or IPv6 /64, so that one client cannot hold every slot.
	// Connections over it are answered 503 and closed. 0 means no bound.
	MaxConnsPerClient int
	// ACME forwards HTTP-01 challenges; nil redirects them like any
	// other request.
	ACME *ACME
	// Log receives one line per request, and warnings.
	Log *slog.Logger
	// Quiet leaves out the per-request lines.
	Quiet bool
	// TrustedFronts are the networks of load balancers whose connections
	// begin with a PROXY header naming the real client; its address is
	// then the client's in the log and in ACME forwarding. Such
	// connections are not counted per client: that is the front's job.
	TrustedFronts proxyheader.Trusted
	// Observer, if set, is told about every answer (metrics).
	Observer Observer
}

// Observer is told what redirect80 answers, for metrics. Its methods are
// called from many goroutines at once.
type Observer interface {
	// Answered counts a response; challenge says it was a forwarded
	// ACME challenge (status then is the backend's, or 502/504).
	Answered(status int, challenge bool)
	// FrontHeader counts a connection from a trusted front: ok, a health
	// check (LOCAL command), or a missing or malformed header.
	FrontHeader(outcome string)
}

// Server answers HTTP requests from any number of listeners.
type Server struct {
	cfg   Config
	group *listener.Group[*conn] // listeners, connections, slots
	clock clock
	bufs  sync.Pool
	// Under the group's lock (newConn, finish):
	clients  map[netip.Addr]map[*conn]struct{}
	warnedAt time.Time // last "too many connections" warning
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, group: listener.NewGroup[*conn](cfg.MaxConns, listener.DropAccepted),
		clients: map[netip.Addr]map[*conn]struct{}{},
	}
	s.bufs.New = func() any { b := make([]byte, initialBuffer); return &b }
	return s
}

// DefaultMaxConns is a bound on concurrent connections: 10000, or less if
// the file descriptor limit is lower (each connection holds one
// descriptor, two while an ACME challenge is forwarded).
func DefaultMaxConns() int { return listener.MaxConns(2, 10000) }

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("redirect: server closed")

// Serve accepts connections on ln and answers each in its own goroutine
// until Shutdown, when it returns ErrServerClosed. Temporary accept errors
// (out of file descriptors, for one) back off and retry.
func (s *Server) Serve(ln net.Listener) error {
	if !s.group.Track(ln) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.group.Untrack(ln)
	var backoff listener.Backoff
	for {
		if !s.acquire() {
			return ErrServerClosed
		}
		nc, err := ln.Accept()
		if err != nil {
			s.group.ReleaseSlot()
			if s.group.Closing() {
				return ErrServerClosed
			}
			if !backoff.Wait(ln, err, s.cfg.Log) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			continue
		}
		backoff.Reset()
		c := s.newConn(nc)
		if c == nil {
			s.group.ReleaseSlot()
			continue
		}
		go c.serve()
	}
}

// acquire takes a connection slot. When none is free it first closes the
// kept-alive connections waiting for a next request: a new client matters
// more than an idle one, and HTTP clients retry on a connection closed
// between requests.
func (s *Server) acquire() bool {
	if s.group.TrySlot() {
		return true
	}
	s.group.Each(func(c *conn) { c.reap(false) })
	return s.group.TakeSlot() // false after Shutdown
}

// clientKey is what MaxConnsPerClient counts by: the IPv4 address, or the
// /64 of an IPv6 address (lib/clientkey, shared with snilisten). Clients
// on UNIX sockets are not counted (ok false).
func clientKey(a net.Addr) (netip.Addr, bool) { return clientkey.Of(a) }

// newConn registers a connection, or refuses it (nil) when the server is
// shutting down or the client already holds MaxConnsPerClient, after
// closing that client's own idle connections.
func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, client: nc.RemoteAddr()}
	c.state.Store(stateFresh)
	key, counted := clientKey(nc.RemoteAddr())
	if s.cfg.TrustedFronts.Contains(nc.RemoteAddr()) {
		c.front, counted = nc.RemoteAddr(), false
	}
	over, warn := false, false
	if s.group.Add(c, func() bool {
		over, warn = s.overShare(c, key, counted)
		return !over
	}) {
		return c
	}
	if over {
		if warn {
			s.cfg.Log.Warn("too many connections from one client, refusing (logged once per 10s)",
				"client", key.String(), "limit", s.cfg.MaxConnsPerClient)
		}
		nc.SetWriteDeadline(time.Now().Add(time.Second))
		nc.Write(appendError(nil, 503, "too many connections from your address", s.clock.date()))
	}
	nc.Close()
	return nil
}

// overShare counts c under its client, under the group's lock, unless
// the client already holds MaxConnsPerClient open connections after its
// own idle ones were closed: then it reports over, and warn once per 10s.
func (s *Server) overShare(c *conn, key netip.Addr, counted bool) (over, warn bool) {
	if !counted || s.cfg.MaxConnsPerClient <= 0 {
		return false, false
	}
	mine := s.clients[key]
	if len(mine) >= s.cfg.MaxConnsPerClient {
		open := 0
		for o := range mine {
			o.reap(false)
			if o.state.Load() != stateClosed {
				open++
			}
		}
		if open >= s.cfg.MaxConnsPerClient {
			warn = time.Since(s.warnedAt) > 10*time.Second
			if warn {
				s.warnedAt = time.Now()
			}
			return true, warn
		}
	}
	if mine == nil {
		mine = map[*conn]struct{}{}
		s.clients[key] = mine
	}
	mine[c] = struct{}{}
	c.key, c.counted = key, true
	return false, false
}

// finish unregisters a connection that has ended and frees its slot.
func (s *Server) finish(c *conn) {
	s.group.Remove(c, func() {
		if c.counted {
			mine := s.clients[c.key]
			delete(mine, c)
			if len(mine) == 0 {
				delete(s.clients, c.key)
			}
		}
	})
	s.group.ReleaseSlot()
}

// Shutdown stops accepting, closes connections waiting for a request, lets
// the requests being answered finish (each answer then closes its
// connection) until ctx is done, then cuts the rest. It returns ctx's
// error if it had to cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.group.Stop() // refuses new connections (listener.DropAccepted)
	s.group.Each(func(c *conn) { c.reap(true) })
	if s.group.Wait(ctx) == nil {
		return nil
	}
	s.group.Cut(func(c *conn) { c.nc.Close() })
	return ctx.Err()
}

// Active returns the number of open connections.
func (s *Server) Active() int { return s.group.Len() }

// Connection states. Only a connection waiting for the first byte of a
// request may be closed from outside (reaped); the state moves to active
// with a compare-and-swap, so a request once started is always answered.
const (
	stateFresh  int32 = iota // accepted, no byte read yet
	stateIdle                // kept alive after a response, nothing buffered
	stateActive              // reading or answering a request
	stateClosed              // reaped
)

// conn is one client connection.
type conn struct {
	s       *Server
	nc      net.Conn
	key     netip.Addr
	counted bool
	state   atomic.Int32
	client  net.Addr // the client: the socket's peer, or what a front's PROXY header said
	front   net.Addr // the trusted front the connection came through, if any
	remote  string   // client address for the log, made once
	bufp    *[]byte
	buf     []byte // read buffer: request bytes in buf[r:w]
	r, w    int
	out     []byte // responses not yet written
	served  int
	hosts   hostCache
}

// reap closes the connection if it is waiting for a request: idle ones
// always, fresh ones too when fresh is set (at shutdown).
func (c *conn) reap(fresh bool) {
	if c.state.CompareAndSwap(stateIdle, stateClosed) || fresh && c.state.CompareAndSwap(stateFresh, stateClosed) {
		c.nc.Close()
	}
}

// errReaped ends a connection closed between requests.
var errReaped = errors.New("closed while idle")

func (c *conn) serve() {
	defer c.s.finish(c)
	c.bufp = c.s.bufs.Get().(*[]byte)
	c.buf = *c.bufp
	defer func() {
		if cap(c.buf) == initialBuffer {
			*c.bufp = c.buf
			c.s.bufs.Put(c.bufp)
		}
	}()
	if d := c.s.cfg.HeaderTimeout; d > 0 {
		c.nc.SetDeadline(time.Now().Add(d))
	}
	if c.front != nil && !c.readFrontHeader() {
		c.nc.Close()
		return
	}
	var req request
	for {
		head, herr, err := c.readHead()
		if err != nil {
			var ne net.Error
			if c.r < c.w && errors.As(err, &ne) && ne.Timeout() {
				c.refuse(errHeaderTimeout, nil)
			} else {
				c.nc.Close()
			}
			return
		}
		if herr != nil {
			c.refuse(herr, nil)
			return
		}
		start := time.Now()
		if herr := parseRequest(head, &req, &c.hosts); herr != nil {
			c.refuse(herr, &req)
			return
		}
		c.served++
		// A body is read and dropped to keep the connection only when its
		// length is known and small, and the client is not waiting for a
		// 100 Continue it will never get.
		keep := req.keepAlive && !c.s.group.Closing() && !req.chunked &&
			req.bodyLen <= maxDiscard && !(req.expect100 && req.bodyLen > 0)
		status, detail, backend := 0, "", ""
		a := c.s.cfg.ACME
		challenge := a != nil && req.isChallenge() && (!req.hostIP || a.ipHosts)
		if challenge {
			status, detail, backend = c.forward(a, &req, keep)
		} else {
			status = 308
			if m := string(req.method); m == "GET" || m == "HEAD" {
				status = 301
			}
			c.out = appendRedirect(c.out, &req, c.s.clock.date(), keep)
		}
		if !c.s.cfg.Quiet {
			c.logRequest(&req, status, detail, backend, start)
		}
		if o := c.s.cfg.Observer; o != nil {
			o.Answered(status, challenge)
		}
		// The body: what is buffered already, then (if keeping the
		// connection) the rest from the socket.
		inBuf := min(int64(c.w-c.r), req.bodyLen)
		c.r += int(inBuf)
		rest := req.bodyLen - inBuf
		if !keep {
			c.flush()
			if rest > 0 || req.chunked || c.r < c.w {
				c.lingerClose()
			} else {
				c.nc.Close()
			}
			return
		}
		if rest > 0 {
			if c.flush() != nil || c.discard(rest) != nil {
				c.nc.Close()
				return
			}
		}
	}
}

// readHead returns the next request's header block, without the empty
// line that ends it; c.r is then just past that line. Empty lines before a
// request line are skipped (RFC 9112 section 2.2). The slice is valid
// until the next call.
func (c *conn) readHead() (head []byte, _ *httpError, _ error) {
	cfg := &c.s.cfg
	if c.r == c.w {
		c.r, c.w = 0, 0
		if c.served > 0 {
			if err := c.flush(); err != nil {
				return nil, nil, err
			}
			c.state.Store(stateIdle)
			if c.s.group.Closing() {
				return nil, nil, errReaped
			}
			c.setDeadline(cfg.IdleTimeout)
		}
		n, err := c.nc.Read(c.buf)
		if !c.state.CompareAndSwap(stateIdle, stateActive) && !c.state.CompareAndSwap(stateFresh, stateActive) {
			return nil, nil, errReaped
		}
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return nil, nil, err
		}
		c.w = n
		if c.served > 0 {
			c.setDeadline(cfg.HeaderTimeout)
		}
	} else if c.served > 0 {
		c.setDeadline(cfg.HeaderTimeout) // a pipelined request
	}
	scan := c.r     // start of the next line to look at
	inHead := false // a non-empty line has been seen
	for {
		for {
			i := bytes.IndexByte(c.buf[scan:c.w], '\n')
			if i < 0 {
				break
			}
			end := scan + i
			if inHead && end+1-c.r > cfg.MaxHeaderBytes {
				return nil, c.tooLarge(), nil
			}
			empty := end == scan || end == scan+1 && c.buf[scan] == '\r'
			switch {
			case empty && !inHead:
				c.r = end + 1 // an empty line before the request line
			case empty:
				head = c.buf[c.r:scan]
				c.r = end + 1
				return head, nil, nil
			default:
				inHead = true
			}
			scan = end + 1
		}
		if c.w-c.r >= cfg.MaxHeaderBytes {
			return nil, c.tooLarge(), nil
		}
		if c.w == len(c.buf) {
			if c.r > 0 {
				n := copy(c.buf, c.buf[c.r:c.w])
				scan -= c.r
				c.r, c.w = 0, n
			} else {
				grown := make([]byte, min(2*len(c.buf), max(cfg.MaxHeaderBytes, initialBuffer)))
				copy(grown, c.buf[:c.w])
				c.buf = grown
			}
		}
		if err := c.flush(); err != nil { // answers to earlier pipelined requests
			return nil, nil, err
		}
		n, err := c.nc.Read(c.buf[c.w:min(len(c.buf), c.r+cfg.MaxHeaderBytes)])
		c.w += n
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return nil, nil, err
		}
	}
}

// tooLarge is the refusal for a header over MaxHeaderBytes: 414 when
// the request line alone is too long.
func (c *conn) tooLarge() *httpError {
	if i := bytes.IndexByte(c.buf[c.r:c.w], '\n'); i < 0 || i+1 > c.s.cfg.MaxHeaderBytes {
		return errRequestLineLong
	}
	return errHeaderTooLarge
}

func (c *conn) setDeadline(d time.Duration) {
	if d > 0 {
		c.nc.SetDeadline(time.Now().Add(d))
	} else {
		c.nc.SetDeadline(time.Time{})
	}
}

// flush writes the responses gathered so far.
func (c *conn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	if cap(c.out) > 16<<10 {
		c.out = nil // after a large forwarded answer
	}
	return err
}

// discard reads and drops n bytes of request body; bytes beyond it are
// the next request's and stay in the buffer.
func (c *conn) discard(n int64) error {
	c.setDeadline(c.s.cfg.HeaderTimeout)
	c.r, c.w = 0, 0
	for n > 0 {
		got, err := c.nc.Read(c.buf)
		if int64(got) > n {
			c.r, c.w = int(n), got
			return nil
		}
		n -= int64(got)
		if err != nil && n > 0 {
			return fmt.Errorf("discard request body: %w", err)
		}
	}
	return nil
}

// refuse answers an error, logs it and closes the connection.
func (c *conn) refuse(e *httpError, req *request) {
	c.out = appendError(c.out, e.status, e.reason, c.s.clock.date())
	if !c.s.cfg.Quiet {
		c.logRequest(req, e.status, e.reason, "", time.Time{})
	}
	if o := c.s.cfg.Observer; o != nil {
		o.Answered(e.status, false)
	}
	c.setDeadline(c.s.cfg.HeaderTimeout)
	c.flush()
	c.lingerClose()
}

// readFrontHeader takes the client's address from the PROXY header a
// trusted front sent, consuming exactly the header, within the header
// timeout. A LOCAL header is the front's health check: closed, counted,
// not logged. Anything else that is not a valid header is logged.
func (c *conn) readFrontHeader() bool {
	h, err := proxyheader.Read(c.nc)
	outcome := "ok"
	switch {
	case errors.Is(err, proxyheader.ErrLocal):
		outcome = "health_check"
	case err != nil:
		outcome = "error"
		if !c.s.cfg.Quiet {
			c.s.cfg.Log.Info("request", "client", c.front.String(), "front", c.front.String(), "status", 0, "error", err.Error())
		}
	default:
		c.client = h.SourceAddr
	}
	if o := c.s.cfg.Observer; o != nil {
		o.FrontHeader(outcome)
	}
	return err == nil
}

// lingerClose closes a connection that may still have request bytes
// coming: it ends the sending side first and drains what arrives for a
// bounded time, so that the kernel does not answer those bytes with a
// reset that would destroy the response before the client reads it.
func (c *conn) lingerClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.nc.SetReadDeadline(time.Now().Add(lingerTime))
		for n := 0; n < lingerBytes; {
			got, err := c.nc.Read(c.buf)
			n += got
			if err != nil {
				break
			}
		}
	}
	c.nc.Close()
}

// logRequest writes the request's log line. req may be nil or only
// partly parsed (a refused request).
func (c *conn) logRequest(req *request, status int, detail, backend string, start time.Time) {
	if c.remote == "" {
		if c.client != nil {
			c.remote = c.client.String()
		}
		if c.remote == "" || c.remote == "@" {
			c.remote = "unix"
		}
	}
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("client", c.remote))
	if c.front != nil {
		attrs = append(attrs, slog.String("front", c.front.String()))
	}
	if req != nil {
		host := req.host
		if host == "" {
			host = string(req.rawHost)
		}
		attrs = append(attrs, slog.String("host", host), slog.String("method", string(req.method)), slog.String("path", string(req.target)))
	}
	attrs = append(attrs, slog.Int("status", status))
	if backend != "" {
		attrs = append(attrs, slog.String("backend", backend), slog.Duration("duration", time.Since(start)))
	}
	level := slog.LevelInfo
	if detail != "" {
		attrs = append(attrs, slog.String("error", detail))
		if status >= 500 {
			level = slog.LevelWarn
		}
	}
	c.s.cfg.Log.LogAttrs(context.Background(), level, "request", attrs...)
}
