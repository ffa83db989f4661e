package clientkey

import "net/netip"

// OfAddr returns the key an address counts under, as Of does for a
// connection: the IPv4 address (unmapped), or the first address of the
// IPv6 /64. It is for callers that hold a netip.Addr already, such as a
// UDP reader (ReadMsgUDPAddrPort), which Of, taking a net.Addr, would
// make allocate.
func OfAddr(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip
}
