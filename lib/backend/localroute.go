package backend

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// localRoutes asks the kernel, over one rtnetlink socket, whether it
// routes an address to this machine (RTN_LOCAL). That is the question a
// wildcard listener's loop depends on, and the kernel is the only one who
// knows the answer: besides loopback and interface addresses, a range
// routed with "ip route add local ... dev lo" (AnyIP, the nat46 prefix)
// is delivered here without any address being configured for it.
//
// The socket is opened on first use and kept; a query reuses the
// request and reply buffers, so it makes no allocation. Queries are
// serialized: the kernel answers a route request synchronously, within
// the sendmsg call, so the lock is held for two short system calls.
type localRoutes struct {
	mu   sync.Mutex
	fd   int   // the socket, once open
	open bool  // whether opening was tried
	err  error // why the socket could not be opened, kept for every query
	seq  uint32
	req  [nlmsgLen + rtmsgLen + rtaLen + 16]byte
	resp [4096]byte
}

// Sizes of the netlink structures a query is made of (linux/netlink.h,
// linux/rtnetlink.h).
const (
	nlmsgLen = unix.SizeofNlMsghdr // 16
	rtmsgLen = unix.SizeofRtMsg    // 12
	rtaLen   = unix.SizeofRtAttr   // 4
)

// netlinkTimeout bounds the wait for the kernel's answer. The answer is
// queued before the request's sendmsg returns, so this only guards
// against a kernel that never answers.
const netlinkTimeout = time.Second

// isLocal reports whether the kernel routes a to this machine: the route
// it would use for a connection to a is of type RTN_LOCAL. An address
// with no route at all is not local (a connection to it fails anyway).
// An error means the kernel could not be asked; the caller decides what
// an unknown answer means.
func (l *localRoutes) isLocal(a netip.Addr) (bool, error) {
	a = a.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open {
		l.open = true
		l.fd, l.err = openRouteSocket()
	}
	if l.err != nil {
		return false, l.err
	}
	l.seq++
	n := l.request(a, l.seq)
	if _, err := unix.Write(l.fd, l.req[:n]); err != nil {
		return false, fmt.Errorf("ask the kernel for the route to %s: %w", a, err)
	}
	// Read until the answer to this request: an earlier request whose
	// answer was not read (a timeout) may have left one behind.
	for range 8 {
		m, err := unix.Read(l.fd, l.resp[:])
		if err != nil {
			return false, fmt.Errorf("read the kernel's route to %s: %w", a, err)
		}
		local, seq, err := parseRouteReply(l.resp[:m])
		if seq != l.seq {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("route to %s: %w", a, err)
		}
		return local, nil
	}
	return false, fmt.Errorf("route to %s: no answer from the kernel", a)
}

// openRouteSocket opens the rtnetlink socket, connected to the kernel so
// that plain write and read work on it.
func openRouteSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return -1, fmt.Errorf("open a route netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(netlinkTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("route netlink socket: set SO_RCVTIMEO: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("route netlink socket: connect to the kernel: %w", err)
	}
	return fd, nil
}

// request writes an RTM_GETROUTE request for the route to a into l.req
// and returns its length.
func (l *localRoutes) request(a netip.Addr, seq uint32) int {
	family, bits := byte(unix.AF_INET), 32
	if a.Is6() {
		family, bits = unix.AF_INET6, 128
	}
	alen := bits / 8
	n := nlmsgLen + rtmsgLen + rtaLen + alen
	b := l.req[:n]
	clear(b)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(n))
	ne.PutUint16(b[4:], unix.RTM_GETROUTE)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(b[8:], seq)
	// rtmsg: family, dst_len; the rest (source, table, type) is left to
	// the kernel, as for a connection that does not bind a source.
	b[nlmsgLen] = family
	b[nlmsgLen+1] = byte(bits)
	rta := b[nlmsgLen+rtmsgLen:]
	ne.PutUint16(rta[0:], uint16(rtaLen+alen))
	ne.PutUint16(rta[2:], unix.RTA_DST)
	if a.Is4() {
		a4 := a.As4()
		copy(rta[rtaLen:], a4[:])
	} else {
		a16 := a.As16()
		copy(rta[rtaLen:], a16[:])
	}
	return n
}

// parseRouteReply reads the kernel's answer to a route request: whether
// the route is RTN_LOCAL, and the sequence number it answers. "No route"
// (ENETUNREACH, EHOSTUNREACH) is a valid answer: not local.
func parseRouteReply(b []byte) (local bool, seq uint32, _ error) {
	ne := binary.NativeEndian
	if len(b) < nlmsgLen {
		return false, 0, fmt.Errorf("short netlink answer (%d bytes)", len(b))
	}
	n, typ := ne.Uint32(b[0:]), ne.Uint16(b[4:])
	seq = ne.Uint32(b[8:])
	if n < nlmsgLen || int(n) > len(b) {
		return false, seq, fmt.Errorf("netlink answer of %d bytes says it has %d", len(b), n)
	}
	switch typ {
	case unix.NLMSG_ERROR:
		if n < nlmsgLen+4 {
			return false, seq, fmt.Errorf("short netlink error (%d bytes)", n)
		}
		errno := unix.Errno(-int32(ne.Uint32(b[nlmsgLen:])))
		switch errno {
		case 0:
			return false, seq, fmt.Errorf("netlink acknowledged without a route")
		case unix.ENETUNREACH, unix.EHOSTUNREACH, unix.ESRCH:
			return false, seq, nil
		}
		return false, seq, fmt.Errorf("netlink: %w", errno)
	case unix.RTM_NEWROUTE:
		if n < nlmsgLen+rtmsgLen {
			return false, seq, fmt.Errorf("short route message (%d bytes)", n)
		}
		// rtmsg.rtm_type is its 8th byte.
		return b[nlmsgLen+7] == unix.RTN_LOCAL, seq, nil
	}
	return false, seq, fmt.Errorf("unexpected netlink message type %d", typ)
}
