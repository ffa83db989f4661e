package quicdispatch

import (
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A socket bound to a wildcard address (0.0.0.0, [::]) answers from
// whichever address the kernel picks for the route to the client, which
// on a machine with several addresses need not be the one the client
// sent to; a QUIC client drops such an answer. So such a socket is asked
// for each datagram's destination (IP_PKTINFO, IPV6_RECVPKTINFO) and the
// answers are sent from it (the same option, as a control message). A
// dual-stack socket reports an IPv4 destination as an IPv4-mapped
// address in IPV6_PKTINFO, and Linux takes it back the same way.

// socketKind is what the read loop needs to know of its socket.
type socketKind struct {
	wildcard bool // bound to 0.0.0.0 or [::]: destinations asked for
	ipv6     bool // AF_INET6 (dual-stack when bound to [::])
}

// enablePktinfo asks pc for each datagram's destination address if it is
// bound to a wildcard address.
func enablePktinfo(pc *net.UDPConn) (socketKind, error) {
	var k socketKind
	rc, err := pc.SyscallConn()
	if err != nil {
		return k, err
	}
	la, _ := pc.LocalAddr().(*net.UDPAddr)
	k.wildcard = la != nil && la.AddrPort().Addr().IsUnspecified()
	var serr error
	if err := rc.Control(func(fd uintptr) {
		domain, derr := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if derr != nil {
			serr = fmt.Errorf("get SO_DOMAIN: %w", derr)
			return
		}
		k.ipv6 = domain == unix.AF_INET6
		switch {
		case !k.wildcard:
		case k.ipv6:
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		default:
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	}); err != nil {
		return k, err
	}
	if serr != nil {
		return k, fmt.Errorf("ask for destination addresses (pktinfo): %w", serr)
	}
	return k, nil
}

// localAddr returns the address a datagram was sent to: from its control
// message on a wildcard socket, else the socket's own address.
func localAddr(pc *net.UDPConn, k socketKind, oob []byte) netip.AddrPort {
	own := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	if !k.wildcard {
		return unmap(own)
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return unmap(own)
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrPortFrom(netip.AddrFrom4(info.Addr), own.Port())
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrPortFrom(netip.AddrFrom16(info.Addr).Unmap(), own.Port())
		}
	}
	return unmap(own)
}

// replyPktinfo returns the control message that sends from local on a
// socket of kind k, or nil if there is no need or local is not known.
func replyPktinfo(k socketKind, local netip.AddrPort) []byte {
	a := local.Addr()
	if !k.wildcard || !a.IsValid() || a.IsUnspecified() {
		return nil
	}
	if k.ipv6 {
		return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: a.As16()}) // As16 maps IPv4
	}
	return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: a.As4()})
}
