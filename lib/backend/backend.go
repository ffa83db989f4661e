// Package backend finds and connects to the server behind a name, by
// convention rather than configuration: a UNIX socket named after the host
// in a directory (Unix), or, in later modes, the host's own DNS address
// within networks the operator allows.
package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Errors that tell the dispatcher which TLS alert a client deserves.
var (
	// ErrUnknownName means no backend exists for the name: the client
	// asked for a host this machine does not serve (unrecognized_name).
	ErrUnknownName = errors.New("no backend for this name")
	// ErrRefused means a backend exists but may not be used or did not
	// answer: a stale socket, a permission error, an address outside the
	// allowed networks (internal_error).
	ErrRefused = errors.New("backend refused")
	// ErrNotAllowed means every address found for the name lies outside
	// the allowed networks, or is the proxy itself: this proxy does not
	// serve the name (unrecognized_name). It wraps ErrRefused.
	ErrNotAllowed = fmt.Errorf("%w: not an allowed backend address", ErrRefused)
)

// Request describes the connection to be forwarded.
type Request struct {
	// Name is the canonical server name (lib/hostname).
	Name string
	// ALPN lists the protocols the client offered, in order.
	ALPN []string
	// Client and Local are the client's address and the address it
	// connected to.
	Client, Local net.Addr
}

// Conn is a connection to a backend, or the instruction to hand the
// client's connection over instead.
type Conn struct {
	net.Conn
	// Backend names what was connected to, for the log: a socket path or
	// an address.
	Backend string
	// Name is the backend's identity for metrics: the socket's file name,
	// or the address connected to (never the DNS name, which a wildcard
	// record lets clients choose). Either exists only because the
	// operator created it, so it is safe as a label.
	Name string
	// Handoff is set, and Conn nil, when the backend at the path Backend
	// takes the client's socket itself (lib/handoff) instead of a relay.
	Handoff bool
	// Local is the local address of a TCP connection that the dialer
	// added to its Outgoing set: the caller removes it when it closes
	// the connection. Zero otherwise.
	Local netip.AddrPort
}

// A Dialer connects to the backend for a request. Errors wrap
// ErrUnknownName or ErrRefused and name what was tried.
type Dialer interface {
	Dial(ctx context.Context, req Request) (Conn, error)
}

// An FDDialer is a Dialer that can also connect without the Go runtime
// and without waiting, for callers that hand the socket straight to
// lib/relay from a loop that must not block (snilisten's accept loop).
type FDDialer interface {
	Dialer
	// DialNow is Dial returning a connected non-blocking socket
	// descriptor (the caller's to close) instead of Conn.Conn, or -1
	// with an error or a handoff. It never waits, so it takes no
	// context: "Now" as in clienthello.PeekNow.
	DialNow(req Request) (fd int, c Conn, err error)
}

// A ConnFDDialer is a Dialer that can return the connected socket as a
// non-blocking descriptor (the caller's to close), for callers that hand
// it to lib/relay. Unlike FDDialer's DialNow, its DialFD may wait (for
// DNS, for a handshake) until ctx is done, so it runs in a goroutine of
// its own. It never hands a connection off (Conn.Handoff stays false):
// the caller relays whatever descriptor it returns, so a Dialer that may
// hand off implements FDDialer instead.
type ConnFDDialer interface {
	Dialer
	DialFD(ctx context.Context, req Request) (fd int, c Conn, err error)
}
