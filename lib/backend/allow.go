package backend

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// AllowList is the set of networks a backend address must lie in. It is
// what keeps a DNS-routed proxy from being an open proxy: whatever a name
// resolves to, only addresses the operator allowed are ever dialled.
type AllowList struct {
	prefixes []netip.Prefix
	// Deny lists exact addresses refused even inside the prefixes, such
	// as the proxy's own listening addresses (a name pointing back at the
	// proxy must not loop).
	deny []netip.AddrPort
	// local asks the kernel whether it routes an address here, for
	// deny entries on a wildcard listener.
	local localRoutes
}

// ParseAllowList parses CIDRs such as "2001:db8::/64" or "192.0.2.0/24".
func ParseAllowList(cidrs []string) (*AllowList, error) {
	a := &AllowList{}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("backend CIDR %q: %w", c, err)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("backend CIDR %q: host bits set (did you mean %s?)", c, p.Masked())
		}
		a.prefixes = append(a.prefixes, p)
	}
	return a, nil
}

// Deny refuses the exact address and port ap even if a prefix allows it.
func (a *AllowList) Deny(ap netip.AddrPort) {
	a.deny = append(a.deny, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// Check returns nil if ap may be dialled, else an error wrapping
// ErrNotAllowed that says why (ErrRefused alone if the kernel could not
// be asked about the route).
func (a *AllowList) Check(ap netip.AddrPort) error {
	addr := ap.Addr().Unmap()
	wildcard := false
	for _, d := range a.deny {
		if d.Port() != ap.Port() {
			continue
		}
		if d.Addr() == addr {
			return fmt.Errorf("%w: %s is this proxy's own listening address", ErrNotAllowed, ap)
		}
		// 0.0.0.0 takes IPv4 only; [::] takes both (dual-stack, as
		// Go and systemd listen by default).
		wildcard = wildcard || d.Addr().IsUnspecified() && (d.Addr().Is6() || addr.Is4())
	}
	allowed := false
	for _, p := range a.prefixes {
		if p.Contains(addr) {
			allowed = true
			break
		}
	}
	if !allowed {
		return fmt.Errorf("%w: %s is outside every -backend-cidr", ErrNotAllowed, addr)
	}
	if wildcard {
		// A listener on every address gets whatever the kernel
		// delivers here: loopback, interface addresses, and ranges
		// routed locally without being configured anywhere (AnyIP,
		// "ip route add local ... dev lo"). Only on a port such a
		// listener of ours listens on, though: a backend on this
		// machine on another port (loopback included) is the
		// operator's to allow, and asking costs two system calls.
		local, err := a.local.isLocal(addr)
		if err != nil {
			return fmt.Errorf("%w: cannot tell whether %s is this machine, where this proxy listens on every address: %v", ErrRefused, ap, err)
		}
		if local {
			return fmt.Errorf("%w: %s is routed to this machine (RTN_LOCAL), where this proxy listens on every address: its own listening address", ErrNotAllowed, ap)
		}
	}
	return nil
}

// Control is a net.Dialer Control function that applies the list to the
// address actually being dialled, after name resolution: a DNS answer that
// changes between a check and the dial cannot slip past it.
func (a *AllowList) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse dial address %q: %v", ErrRefused, address, err)
	}
	return a.Check(ap)
}

// String implements flag.Value: the networks, comma-separated.
func (a *AllowList) String() string {
	if a == nil {
		return ""
	}
	s := make([]string, len(a.prefixes))
	for i, p := range a.prefixes {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Set implements flag.Value for a repeatable -backend-cidr flag.
func (a *AllowList) Set(cidr string) error {
	b, err := ParseAllowList([]string{cidr})
	if err != nil {
		return err
	}
	a.prefixes = append(a.prefixes, b.prefixes...)
	return nil
}

// Empty reports whether no network is allowed.
func (a *AllowList) Empty() bool { return len(a.prefixes) == 0 }

// DenyListeners refuses the TCP addresses the given listeners listen on:
// a name resolving to the proxy itself must not make it connect to itself.
func (a *AllowList) DenyListeners(lns []net.Listener) {
	for _, ln := range lns {
		if ta, ok := ln.Addr().(*net.TCPAddr); ok {
			if ap := ta.AddrPort(); ap.IsValid() {
				a.Deny(ap)
			}
		}
	}
}

// DenyUDP refuses the addresses the given UDP sockets are bound to, as
// DenyListeners does for TCP: a name resolving to the proxy's own QUIC
// port must not make it send a client's datagrams to itself.
func (a *AllowList) DenyUDP(pcs []*net.UDPConn) {
	for _, pc := range pcs {
		if ua, ok := pc.LocalAddr().(*net.UDPAddr); ok {
			if ap := ua.AddrPort(); ap.IsValid() {
				a.Deny(ap)
			}
		}
	}
}
