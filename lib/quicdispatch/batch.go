package quicdispatch

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The read loop takes the clients' datagrams batchSize at a time with
// one recvmmsg(2), without waiting while any are queued: under a flood,
// what each datagram costs is mostly the system call that reads it.

const (
	// batchSize is the most datagrams one read takes.
	batchSize = 32
	// maxDatagram is the largest client datagram read whole; a larger
	// one (no QUIC client sends one: quic-go and Chromium stay under
	// 1500 bytes) is dropped as truncated.
	maxDatagram = 4096
	// batchOOB holds a datagram's IP_PKTINFO or IPV6_PKTINFO.
	batchOOB = 64
)

// mmsghdr is struct mmsghdr of recvmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// batchReader is the memory one recvmmsg fills: about 130 KiB for each
// listening socket.
type batchReader struct {
	hdrs  [batchSize]mmsghdr
	iovs  [batchSize]unix.Iovec
	names [batchSize]unix.RawSockaddrInet6 // large enough for either family
	bufs  [batchSize][maxDatagram]byte
	oobs  [batchSize][batchOOB]byte
}

func newBatchReader() *batchReader {
	b := new(batchReader)
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(maxDatagram)
		h := &b.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Control = &b.oobs[i][0]
	}
	return b
}

// read takes up to batchSize datagrams from the socket fd without
// waiting, and returns how many (unix.EAGAIN if none is queued).
func (b *batchReader) read(fd uintptr) (int, error) {
	for i := range b.hdrs {
		h := &b.hdrs[i].hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(batchOOB)
		h.Flags = 0
	}
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), batchSize, unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// datagram returns the i-th datagram read: its bytes, its control
// messages, its sender, and whether it was cut at maxDatagram.
func (b *batchReader) datagram(i int) (data, oob []byte, from netip.AddrPort, truncated bool) {
	h := &b.hdrs[i]
	data = b.bufs[i][:min(int(h.len), maxDatagram)]
	oob = b.oobs[i][:min(int(h.hdr.Controllen), batchOOB)]
	truncated = h.hdr.Flags&unix.MSG_TRUNC != 0
	switch sa := &b.names[i]; sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		from = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(&sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 { // a link-local client: answers need its interface
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		from = netip.AddrPortFrom(a, port(&sa.Port))
	}
	return data, oob, from, truncated
}

// port reads a port stored in network byte order.
func port(p *uint16) uint16 {
	return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(p))[:])
}
