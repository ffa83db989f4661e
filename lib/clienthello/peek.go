package clienthello

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// wireLimit bounds the bytes Peek looks at for a hello whose handshake
// message may be limit bytes long: room for the record headers of a hello
// fragmented into small records, but not unbounded.
func wireLimit(limit int) int { return 2*limit + 1024 }

// Peek reads the ClientHello at the head of c's receive queue without
// consuming it: the bytes are read with recv(MSG_PEEK), so that afterwards
// the connection can be spliced to a backend or handed to another process
// with the hello still unread. While the hello is incomplete it waits for
// more bytes on the runtime's poller, and so honours c's read deadline
// (the error then wraps os.ErrDeadlineExceeded).
//
// buf is scratch space: Peek uses it (grown as needed, up to twice limit
// plus room for record headers) and returns it, so that callers can keep
// buffers in a pool. The returned Info reads from the returned buffer,
// which holds the bytes peeked, also when the hello is refused or the
// deadline passes (so that a caller can tell a stalled TLS client from
// a silent one and knows how many bytes wait unread).
// A peer that closes before a whole hello arrived gives io.ErrUnexpectedEOF,
// or io.EOF if it sent nothing; a reset gives the socket's error
// (syscall.ECONNRESET).
func Peek(c syscall.Conn, buf []byte, limit int) (Info, []byte, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Info{}, buf, fmt.Errorf("peek ClientHello: %w", err)
	}
	if cap(buf) == 0 {
		buf = make([]byte, 0, 2048)
	}
	// The state lives in one struct so that the callback costs two
	// allocations (the struct and the method value), not one per variable.
	p := &peeker{buf: buf[:cap(buf)], limit: limit}
	err = rc.Read(p.try)
	buf, n := p.buf, p.n
	switch {
	case err != nil:
		return Info{}, buf[:n], fmt.Errorf("peek ClientHello after %d bytes: %w", n, err)
	case p.recvErr != nil:
		return Info{}, buf[:n], fmt.Errorf("peek ClientHello after %d bytes: %w", n, p.recvErr)
	case n == 0 && p.parsed == nil:
		return Info{}, buf[:0], io.EOF
	case n == 0 || p.closed && errors.Is(p.parsed, ErrIncomplete):
		return Info{}, buf[:n], fmt.Errorf("peek ClientHello: connection closed after %d bytes: %w", n, io.ErrUnexpectedEOF)
	}
	return p.info, buf[:n], p.parsed
}

// peeker is the state of one Peek.
type peeker struct {
	buf     []byte // all of it is used; grown up to wireLimit(limit)
	limit   int
	n       int // bytes peeked so far
	info    Info
	parsed  error // what ParseLimit said of buf[:n]
	recvErr error
	closed  bool // the peer can send no more bytes
}

// try is the callback of syscall.RawConn.Read: it reports whether Peek is
// done, or false to wait until the socket is readable again.
func (p *peeker) try(fd uintptr) bool {
	for {
		m, e := recvPeek(fd, p.buf)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return false // wait for bytes
		case e != nil:
			p.recvErr = e
			return true
		}
		if p.n = m; p.n == 0 {
			return true // EOF
		}
		p.info, p.parsed = ParseLimit(p.buf[:p.n], p.limit)
		if !errors.Is(p.parsed, ErrIncomplete) {
			return true
		}
		if p.n < len(p.buf) {
			// recv(MSG_PEEK) returns the unread bytes again and again
			// and never reports end of stream while they remain, and
			// the poller reports a FIN or reset only once: ask whether
			// more bytes can come at all.
			if p.closed {
				return true // incomplete for good
			}
			if p.closed, p.recvErr = peerDone(fd); p.recvErr != nil {
				return true
			}
			if p.closed {
				continue // peek once more: every byte sent is here now
			}
			return false // wait for more bytes
		}
		if len(p.buf) >= wireLimit(p.limit) {
			p.parsed = fmt.Errorf("%w: more than %d bytes of records", ErrTooLarge, len(p.buf))
			return true
		}
		p.buf = append(p.buf, make([]byte, min(len(p.buf), wireLimit(p.limit)-len(p.buf)))...)
		p.buf = p.buf[:cap(p.buf)]
	}
}

// peerDone reports whether no more bytes can arrive on fd because the peer
// shut down its sending side (FIN), or returns the error that ended the
// connection (a reset).
func peerDone(fd uintptr) (bool, error) {
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	for {
		n, err := unix.Poll(fds[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll: %w", err)
		}
		if n == 0 {
			return false, nil
		}
		break
	}
	ev := fds[0].Revents
	if ev&unix.POLLERR != 0 {
		if soErr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR); err == nil && soErr != 0 {
			return true, syscall.Errno(soErr)
		}
	}
	return ev&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0, nil
}

// recvPeek is recv(fd, b, MSG_PEEK) without the allocations of the generic
// Recvfrom wrappers (they return the peer's address, which a connected
// socket does not need).
func recvPeek(fd uintptr, b []byte) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_PEEK, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
