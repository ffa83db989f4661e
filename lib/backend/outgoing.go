package backend

import (
	"net"
	"net/netip"
	"sync"
)

// Outgoing is the set of the local addresses of a proxy's own open
// connections to backends. A connection the proxy accepts from one of
// them is the proxy talking to itself: a name whose address the route
// check (AllowList) cannot see as this machine, yet which leads here (a
// DNAT or REDIRECT rule, policy routing by port), and which would
// otherwise take a connection slot per round until every slot is held.
//
// A TCP dialer adds each connection's local address as soon as the
// connect returns, before a byte is sent on it; whoever closes the
// connection removes it (Remove). The accepting side asks once the
// client's first bytes are there: by then, if the client is one of our
// own sockets, it has been added. The zero value is an empty set; a nil
// *Outgoing is an empty set that stays empty.
type Outgoing struct {
	mu sync.Mutex
	// A count rather than a flag: a port freed by one connection may
	// be taken by the next before the first is removed.
	m map[netip.AddrPort]int
}

// Add records a connection's local address.
func (o *Outgoing) Add(ap netip.AddrPort) {
	if o == nil || !ap.IsValid() {
		return
	}
	ap = unmapPort(ap)
	o.mu.Lock()
	if o.m == nil {
		o.m = map[netip.AddrPort]int{}
	}
	o.m[ap]++
	o.mu.Unlock()
}

// Remove forgets a connection's local address, once per Add.
func (o *Outgoing) Remove(ap netip.AddrPort) {
	if o == nil || !ap.IsValid() {
		return
	}
	ap = unmapPort(ap)
	o.mu.Lock()
	if n := o.m[ap]; n > 1 {
		o.m[ap] = n - 1
	} else {
		delete(o.m, ap)
	}
	o.mu.Unlock()
}

// Contains reports whether ap is the local address of one of our open
// connections.
func (o *Outgoing) Contains(ap netip.AddrPort) bool {
	if o == nil || !ap.IsValid() {
		return false
	}
	ap = unmapPort(ap)
	o.mu.Lock()
	_, ok := o.m[ap]
	o.mu.Unlock()
	return ok
}

// ContainsAddr is Contains for a connection's peer address (a
// *net.TCPAddr; anything else is not ours).
func (o *Outgoing) ContainsAddr(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok || o == nil {
		return false
	}
	return o.Contains(ta.AddrPort())
}

// Len returns the number of connections in the set.
func (o *Outgoing) Len() int {
	if o == nil {
		return 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, c := range o.m {
		n += c
	}
	return n
}

func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
