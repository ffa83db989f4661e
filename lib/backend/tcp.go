package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/snitools/snitools/lib/nat46"
	"github.com/snitools/snitools/lib/rawsys"
	"golang.org/x/sys/unix"
)

// TCP connects to the address the name has in DNS, as a TLS client would,
// but only inside the AllowList. With a NAT46 prefix it connects over IPv6
// only, from a source address that embeds the client's IPv4 address, so
// that an unmodified backend sees and logs the real client.
type TCP struct {
	// Allow is checked on every address actually dialled.
	Allow *AllowList
	// Port is the backend port; 0 means the port the client connected to.
	Port int
	// Resolver looks names up (net.DefaultResolver if nil).
	Resolver *net.Resolver
	// NAT46, if valid, makes this the nat46 mode.
	NAT46 nat46.Prefix
	// SRVPorts are the only ports an SRV target may have
	// (DefaultSRVPorts if nil). The allow list limits addresses, not
	// ports: without this, an SRV record could send a client to any
	// service on a backend machine (a database, an admin port).
	SRVPorts []uint16
	// Outgoing, if set, gets the local address of every connection
	// made, for the caller to remove when it closes it (Conn.Local).
	Outgoing *Outgoing
}

// DefaultSRVPorts are the ports of XMPP over TLS, client to server and
// server to server (RFC 7590), the only services reached through SRV.
var DefaultSRVPorts = []uint16{5223, 5269}

// MaxTargets bounds the addresses tried for one connection, and the SRV
// targets looked up: a DNS answer chooses how many there are, and each
// costs a lookup or a connection attempt within the one -connect-timeout.
const MaxTargets = 8

// Dial resolves req.Name and connects to the first allowed address that
// answers. When the client offers exactly one ALPN protocol, "xmpp-client"
// or "xmpp-server", it follows the _xmpps-client._tcp or
// _xmpps-server._tcp SRV records instead, as XMPP clients do.
func (d TCP) Dial(ctx context.Context, req Request) (Conn, error) {
	var c net.Conn
	t, err := d.dialFirst(ctx, req, func(t netip.AddrPort, source *net.TCPAddr) error {
		dialer := net.Dialer{LocalAddr: source, Control: d.control(source != nil)}
		var err error
		c, err = dialer.DialContext(ctx, "tcp", t.String())
		return unwrapDial(err)
	})
	if err != nil {
		return Conn{}, err
	}
	var local netip.AddrPort
	if d.Outgoing != nil {
		if ta, ok := c.LocalAddr().(*net.TCPAddr); ok {
			local = ta.AddrPort()
			d.Outgoing.Add(local)
		}
	}
	// The address, not the name, identifies the backend for metrics: a
	// wildcard DNS record lets clients make up any number of names that
	// all reach one backend.
	return Conn{Conn: c, Backend: t.String(), Name: t.String(), Local: local}, nil
}

// DialFD is Dial for the relay: it returns the connected socket as a
// non-blocking descriptor (the caller's to close) instead of a net.Conn.
// The socket is made with raw system calls and enters the Go runtime's
// poller only if the handshake is still going on after the connect call
// (a backend on another machine); a backend on this one has answered by
// then. It sets no option the relay does not need (Go's dial sets
// keep-alive and Nagle's algorithm off, and looks both addresses up).
func (d TCP) DialFD(ctx context.Context, req Request) (int, Conn, error) {
	fd := -1
	t, err := d.dialFirst(ctx, req, func(t netip.AddrPort, source *net.TCPAddr) error {
		var src netip.Addr
		if source != nil {
			src, _ = netip.AddrFromSlice(source.IP)
		}
		var err error
		fd, err = connectFD(ctx, t, src)
		return err
	})
	if err != nil {
		return -1, Conn{}, err
	}
	var local netip.AddrPort
	if d.Outgoing != nil {
		la, err := rawsys.Getsockname(fd)
		if err != nil {
			rawsys.Close(fd)
			return -1, Conn{}, fmt.Errorf("%w: %s: local address of the connection: %w", ErrRefused, t, err)
		}
		local = la.AddrPort()
		d.Outgoing.Add(local)
	}
	return fd, Conn{Backend: t.String(), Name: t.String(), Local: local}, nil
}

// DialUDP is Dial for a QUIC flow: it returns a UDP socket connected to
// the first allowed address of the name (a UDP connect sends nothing, so
// the first allowed address is the one used; a backend that is down
// answers with ICMP, seen as a read error). In nat46 mode the socket is
// bound, with IPV6_FREEBIND, to the client's IPv4 address embedded in the
// prefix and, where it is free and allowed, to the client's own port, so
// that the backend sees the client as it would over TCP.
func (d TCP) DialUDP(ctx context.Context, req Request) (*net.UDPConn, Conn, error) {
	var c net.Conn
	t, err := d.dialFirst(ctx, req, func(t netip.AddrPort, source *net.TCPAddr) error {
		dialer := net.Dialer{Control: d.control(source != nil)}
		if source != nil {
			dialer.LocalAddr = &net.UDPAddr{IP: source.IP, Port: int(addrPortOf(req.Client).Port())}
		}
		var err error
		c, err = dialer.DialContext(ctx, "udp", t.String())
		if err != nil && source != nil && (errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EACCES)) {
			// The client's port is taken on that address (by a flow of
			// another listener) or privileged: any port will do.
			dialer.LocalAddr = &net.UDPAddr{IP: source.IP}
			c, err = dialer.DialContext(ctx, "udp", t.String())
		}
		return unwrapDial(err)
	})
	if err != nil {
		return nil, Conn{}, err
	}
	return c.(*net.UDPConn), Conn{Backend: t.String(), Name: t.String()}, nil
}

// dialFirst resolves req and calls connect (from the NAT46 source in
// nat46 mode, else nil) for each allowed address in turn until one
// succeeds, and returns that address. Its errors are Dial's.
func (d TCP) dialFirst(ctx context.Context, req Request, connect func(t netip.AddrPort, source *net.TCPAddr) error) (netip.AddrPort, error) {
	var source *net.TCPAddr
	if d.NAT46.IsValid() {
		src, err := d.sourceFor(req.Client)
		if err != nil {
			return netip.AddrPort{}, err
		}
		source = src
	}
	targets, errs, err := d.resolve(ctx, req)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, t := range targets {
		if err := d.Allow.Check(t); err != nil {
			errs = append(errs, err)
			continue
		}
		err := connect(t, source)
		if err == nil {
			return t, nil
		}
		errs = append(errs, fmt.Errorf("%w: %s: %w", ErrRefused, t, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: %s has no address", ErrUnknownName, req.Name)
	}
	return netip.AddrPort{}, fmt.Errorf("%s: %w", req.Name, joinErrors(errs))
}

// connectFD connects a raw socket to to, waiting for the handshake on the
// runtime's poller if it has not finished when connect returns, until ctx
// ends.
func connectFD(ctx context.Context, to netip.AddrPort, source netip.Addr) (int, error) {
	fd, inProgress, err := rawsys.ConnectTCP(to, source)
	if err != nil {
		return -1, fmt.Errorf("connect: %w", err)
	}
	if !inProgress {
		return fd, nil
	}
	if done, err := rawsys.Connected(fd); done {
		if err != nil {
			rawsys.Close(fd)
			return -1, fmt.Errorf("connect: %w", err)
		}
		return fd, nil
	}
	f := os.NewFile(uintptr(fd), "backend")
	defer f.Close()
	if deadline, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Now()) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	var connectErr error
	err = rc.Write(func(uintptr) bool {
		var done bool
		done, connectErr = rawsys.Connected(fd)
		return done
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return -1, fmt.Errorf("connect: %w", context.Cause(ctx))
	case err != nil:
		return -1, fmt.Errorf("connect: %w", err)
	case connectErr != nil:
		return -1, fmt.Errorf("connect: %w", connectErr)
	}
	// Out of the poller again: a duplicate for the relay, and the
	// original closed (and unregistered) with f.
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	return dup, nil
}

// unwrapDial drops net.OpError's repetition of the addresses.
func unwrapDial(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// sourceFor returns the NAT46 source address for a client: IPv4 clients
// only, since an IPv6 client should have connected to the backend itself.
func (d TCP) sourceFor(client net.Addr) (*net.TCPAddr, error) {
	ip := addrPortOf(client).Addr().Unmap()
	if !ip.IsValid() {
		return nil, fmt.Errorf("%w: nat46 needs a TCP or UDP client, not %v", ErrRefused, client)
	}
	if !ip.Is4() {
		return nil, fmt.Errorf("%w: client %s came over IPv6; it should connect to the backend directly", ErrRefused, ip)
	}
	src, err := d.NAT46.Embed(ip)
	if err != nil {
		return nil, fmt.Errorf("%w: embed %s in %s: %v", ErrRefused, ip, d.NAT46, err)
	}
	return &net.TCPAddr{IP: src.AsSlice()}, nil
}

// addrPortOf returns the address and port of a TCP or UDP address, or
// the zero AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// control returns the Dialer.Control function: the allow list, checked on
// the address being dialled, and for nat46 IPV6_FREEBIND so that the
// embedded source address need not be configured on an interface (the
// prefix is routed locally instead).
func (d TCP) control(freebind bool) func(network, address string, rc syscall.RawConn) error {
	return func(network, address string, rc syscall.RawConn) error {
		if err := d.Allow.Control(network, address, rc); err != nil {
			return err
		}
		if !freebind {
			return nil
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set IPV6_FREEBIND: %w", serr)
		}
		return nil
	}
}

// resolve returns the addresses to try for a request, in order, at most
// MaxTargets of them, and the refusals of SRV targets on ports outside
// SRVPorts, which are not looked up.
func (d TCP) resolve(ctx context.Context, req Request) ([]netip.AddrPort, []error, error) {
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	port := d.Port
	if port == 0 {
		port = int(addrPortOf(req.Local).Port())
	}
	network := "ip"
	if d.NAT46.IsValid() {
		network = "ip6"
	}
	if len(req.ALPN) == 1 && (req.ALPN[0] == "xmpp-client" || req.ALPN[0] == "xmpp-server") {
		service := "xmpps-" + strings.TrimPrefix(req.ALPN[0], "xmpp-")
		_, srvs, err := r.LookupSRV(ctx, service, "tcp", req.Name)
		if err != nil {
			return nil, nil, lookupError(req.Name, "SRV _"+service+"._tcp", err)
		}
		ports := d.SRVPorts
		if ports == nil {
			ports = DefaultSRVPorts
		}
		var out []netip.AddrPort
		var refused []error
		looked := 0
		for _, srv := range srvs {
			if srv.Target == "." {
				continue // "service decidedly not available" (RFC 2782)
			}
			if !slices.Contains(ports, srv.Port) {
				refused = append(refused, fmt.Errorf("%w: SRV target %s port %d is not in -srv-ports", ErrNotAllowed, srv.Target, srv.Port))
				continue
			}
			if looked == MaxTargets || len(out) >= MaxTargets {
				break
			}
			looked++
			addrs, err := r.LookupNetIP(ctx, network, srv.Target)
			if err != nil {
				continue
			}
			for _, a := range addrs {
				out = append(out, netip.AddrPortFrom(a.Unmap(), srv.Port))
			}
		}
		return out[:min(len(out), MaxTargets)], refused, nil
	}
	addrs, err := r.LookupNetIP(ctx, network, req.Name)
	if err != nil {
		return nil, nil, lookupError(req.Name, network, err)
	}
	out := make([]netip.AddrPort, 0, min(len(addrs), MaxTargets))
	for _, a := range addrs[:min(len(addrs), MaxTargets)] {
		out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(port)))
	}
	return out, nil, nil
}

// lookupError maps a failed lookup: a name that does not exist, or has no
// address of the family asked for (an IPv4-only name in nat46 mode), is
// unknown; anything else (timeouts, server failures) is a refusal.
func lookupError(name, what string, err error) error {
	var dnsErr *net.DNSError
	var addrErr *net.AddrError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound || errors.As(err, &addrErr) {
		return fmt.Errorf("%w: %s: no %s record", ErrUnknownName, name, what)
	}
	return fmt.Errorf("%w: look up %s %s: %v", ErrRefused, what, name, err)
}

// joinErrors joins the failures of every address tried. The result
// matches ErrNotAllowed only if every address was refused by the allow
// list, so that the caller can tell "not ours" from "ours but down".
func joinErrors(errs []error) error {
	for _, e := range errs {
		if !errors.Is(e, ErrNotAllowed) {
			return fmt.Errorf("%w: %s", ErrRefused, strings.ReplaceAll(errors.Join(errs...).Error(), "\n", "; "))
		}
	}
	return errors.Join(errs...)
}
