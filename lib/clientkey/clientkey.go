// Package clientkey says which connections come from the same client, for
// bounds on connections per client: the same IPv4 address, or the same
// IPv6 /64, the share a subscriber usually gets (an IPv6 client can pick
// any address in its /64, so counting addresses would bound nothing).
// redirect80 and snilisten count by it.
package clientkey

import (
	"net"
	"net/netip"
)

// Of returns the key a connection from a counts under: the IPv4 address
// (also when written as an IPv4-mapped IPv6 address), or the first address
// of the IPv6 /64. Clients on UNIX sockets have none (ok false).
func Of(a net.Addr) (key netip.Addr, ok bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Addr{}, false
	}
	return OfAddr(ip), true
}
