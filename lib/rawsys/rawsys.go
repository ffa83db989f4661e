// Package rawsys makes the system calls of snilisten's fast paths — the
// relay's event loops and the accept loop that dispatches a connection
// without a goroutine — without telling the Go scheduler.
//
// Why: a system call made the usual way (syscall.Syscall) enters the
// scheduler's "in a system call" state, and when the process had been
// idle for a moment, that wakes the scheduler's monitor thread, which
// then polls every 20 µs for a millisecond or more, and lets it hand the
// caller's processor to another thread if the call takes a while. A
// proxy under connection load is idle for moments hundreds of times a
// second: the monitor's polling and the wake-ups cost more CPU than the
// relaying (perf: runtime.sysmon at 11–15% of snilisten's samples).
//
// The calls here are only for non-blocking sockets and pipes, which
// return at once: none of them may wait. (connect on a UNIX stream
// socket does not wait either: a full backlog is EAGAIN; ConnectTCP
// starts a handshake and returns.)
package rawsys

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Splice moves up to n bytes from rfd to wfd without blocking.
func Splice(rfd, wfd, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(rfd), 0, uintptr(wfd), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return int(r), errnoErr(e)
}

// Read is read(2).
func Read(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(r), errnoErr(e)
}

// Write is write(2).
func Write(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(r), errnoErr(e)
}

// Send is send(fd, p, MSG_NOSIGNAL|MSG_DONTWAIT), for sockets: a peer
// that has gone gives EPIPE without the SIGPIPE a write(2) raises, which
// the runtime would catch and ignore at the cost of a signal delivery —
// on most connections, whose last bytes (a close_notify) meet a peer that
// already closed.
func Send(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT, 0, 0)
	return int(r), errnoErr(e)
}

// RecvPeek is recv(fd, b, MSG_PEEK|MSG_DONTWAIT): the bytes at the head
// of the receive queue, left there.
func RecvPeek(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return int(r), errnoErr(e)
}

// ShutdownWrite is shutdown(fd, SHUT_WR).
func ShutdownWrite(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errnoErr(e)
}

// Close closes a descriptor that cannot linger: a pipe, or a socket
// without SO_LINGER.
func Close(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// EpollReady collects ready events without waiting.
func EpollReady(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	return int(r), errnoErr(e)
}

// EpollCtl registers fd with the epoll instance epfd (op
// unix.EPOLL_CTL_ADD) or changes its events (EPOLL_CTL_MOD).
func EpollCtl(epfd, op, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
	return errnoErr(e)
}

// Accept4 accepts a connection on the non-blocking TCP listening socket
// lfd as a non-blocking, close-on-exec socket, and returns the client's
// address.
func Accept4(lfd int) (int, *net.TCPAddr, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, nil, e
	}
	return int(r), tcpAddr(&rsa), nil
}

// Getsockname returns the local address of a TCP socket.
func Getsockname(fd int) (*net.TCPAddr, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return nil, e
	}
	return tcpAddr(&rsa), nil
}

// tcpAddr decodes an IPv4 or IPv6 socket address. A zone is kept as its
// interface index: link-local clients of a TLS proxy are rare, and the
// name would cost a lookup.
func tcpAddr(rsa *unix.RawSockaddrAny) *net.TCPAddr {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: int(p[0])<<8 | int(p[1])} // 4 bytes, as Go's own
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		a := &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: int(p[0])<<8 | int(p[1])}
		if sa.Scope_id != 0 {
			a.Zone = uitoa(sa.Scope_id)
		}
		return a
	}
	return &net.TCPAddr{}
}

func uitoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		if v /= 10; v == 0 {
			return string(b[i:])
		}
	}
}

// SocketDomain returns a socket's address family (unix.AF_INET, AF_INET6,
// AF_UNIX), or -1 if it cannot tell.
func SocketDomain(fd int) int {
	var v int32
	n := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_DOMAIN, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return -1
	}
	return int(v)
}

// SetNoDelay sets TCP_NODELAY, as Go does on every TCP connection. Set on
// a listening socket, it holds for every connection accepted from it.
func SetNoDelay(fd int) error {
	one := int32(1)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
	return errnoErr(e)
}

// ConnectUnix connects a new non-blocking, close-on-exec UNIX socket of
// type typ (unix.SOCK_STREAM, unix.SOCK_SEQPACKET) to path.
func ConnectUnix(path string, typ int) (int, error) {
	var sa unix.RawSockaddrUnix
	if len(path) == 0 || len(path) >= len(sa.Path) {
		return -1, unix.EINVAL
	}
	sa.Family = unix.AF_UNIX
	for i := range len(path) {
		sa.Path[i] = int8(path[i])
	}
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_UNIX, uintptr(typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC), 0)
	if e != 0 {
		return -1, e
	}
	fd := int(r)
	size := unsafe.Offsetof(sa.Path) + uintptr(len(path)) + 1
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), size); e != 0 {
		Close(fd)
		return -1, e
	}
	return fd, nil
}

// SendFD sends payload with the descriptor fd attached (SCM_RIGHTS) on
// the connected socket s.
func SendFD(s int, payload []byte, fd int) error {
	oob := unix.UnixRights(fd)
	iov := unix.Iovec{Base: unsafe.SliceData(payload)}
	iov.SetLen(len(payload))
	msg := unix.Msghdr{Iov: &iov, Iovlen: 1, Control: unsafe.SliceData(oob)}
	msg.SetControllen(len(oob))
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(s), uintptr(unsafe.Pointer(&msg)), unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
	return errnoErr(e)
}

// ConnectTCP starts connecting a new non-blocking, close-on-exec TCP
// socket to to, from source if it is valid (with IPV6_FREEBIND, so that
// the address need not be on an interface: NAT46 sources). It returns the
// socket, with TCP_NODELAY, and whether the handshake is still in
// progress (EINPROGRESS); Connected tells when it is done.
func ConnectTCP(to netip.AddrPort, source netip.Addr) (fd int, inProgress bool, _ error) {
	family := unix.AF_INET
	if to.Addr().Is6() {
		family = unix.AF_INET6
	}
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, false, e
	}
	fd = int(r)
	// Nagle's algorithm would hold back the small records of a TLS
	// handshake for the backend's delayed ACK (40 ms); Go's dial turns
	// it off too.
	if err := SetNoDelay(fd); err != nil {
		Close(fd)
		return -1, false, err
	}
	if source.IsValid() {
		one := int32(1)
		if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, uintptr(unsafe.Pointer(&one)), 4, 0); e != 0 {
			Close(fd)
			return -1, false, e
		}
		sa, size := rawSockaddr(netip.AddrPortFrom(source, 0))
		if _, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(sa), size); e != 0 {
			Close(fd)
			return -1, false, e
		}
	}
	sa, size := rawSockaddr(to)
	_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), size)
	switch e {
	case 0:
		return fd, false, nil
	case unix.EINPROGRESS:
		return fd, true, nil
	}
	Close(fd)
	return -1, false, e
}

// rawSockaddr returns a sockaddr_in or sockaddr_in6 for ap.
func rawSockaddr(ap netip.AddrPort) (unsafe.Pointer, uintptr) {
	port := ap.Port()
	if ap.Addr().Is4() {
		sa := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return unsafe.Pointer(sa), unix.SizeofSockaddrInet4
	}
	sa := &unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return unsafe.Pointer(sa), unix.SizeofSockaddrInet6
}

// Connected reports whether the connection ConnectTCP started on fd has
// finished (done), and how: nil, or the error that ended it (SO_ERROR).
func Connected(fd int) (done bool, _ error) {
	pfd := unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
	var zero unix.Timespec
	r, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
	if e != 0 {
		return true, e
	}
	if r == 0 || pfd.Revents == 0 {
		return false, nil
	}
	var soerr int32
	size := uint32(4)
	if _, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR, uintptr(unsafe.Pointer(&soerr)), uintptr(unsafe.Pointer(&size)), 0); e != 0 {
		return true, e
	}
	return true, errnoErr(syscall.Errno(soerr))
}
