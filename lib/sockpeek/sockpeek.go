// Package sockpeek reads the head of a socket's receive queue without
// consuming it (recv with MSG_PEEK), waiting on the Go runtime's poller
// until a caller-supplied function has seen enough. Whatever was peeked
// stays in the socket for whoever reads it next: a splice, another
// process after a handoff, or a plain read.
package sockpeek

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/snitools/snitools/lib/rawsys"
)

// ErrFull means max bytes were peeked and the function still wanted more.
var ErrFull = errors.New("peek: buffer limit reached")

// Until peeks at c until enough(b) reports true for the bytes b peeked so
// far. It waits for more bytes on the poller, and so honours c's read
// deadline (the error then wraps os.ErrDeadlineExceeded).
//
// buf is scratch space, grown as needed up to max bytes and returned, so
// that callers can keep buffers in a pool; the returned slice holds the
// bytes peeked, whatever the error. A peer that closes gives io.EOF if it
// sent nothing, else io.ErrUnexpectedEOF; a reset gives the socket's error
// (syscall.ECONNRESET).
func Until(c syscall.Conn, buf []byte, max int, enough func(b []byte) bool) ([]byte, error) {
	return until(c, buf, max, enough, &peeker{})
}

// until is Until with the peeker p, which may draw on a Budget.
func until(c syscall.Conn, buf []byte, max int, enough func(b []byte) bool, p *peeker) ([]byte, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return buf[:0], fmt.Errorf("peek: %w", err)
	}
	if cap(buf) == 0 {
		buf = make([]byte, 0, min(2048, max))
	}
	// The state lives in one struct so that the callback costs two
	// allocations (the struct and the method value), not one per variable.
	p.buf, p.max, p.enough = buf[:cap(buf)], max, enough
	err = rc.Read(p.try)
	b := p.buf[:p.n]
	switch {
	case err != nil:
		return b, fmt.Errorf("peek after %d bytes: %w", p.n, err)
	case p.err != nil:
		return b, p.err
	case p.done:
		return b, nil
	case p.n == 0:
		return b, io.EOF
	}
	return b, fmt.Errorf("peek: connection closed after %d bytes: %w", p.n, io.ErrUnexpectedEOF)
}

// peeker is the state of one Until.
type peeker struct {
	buf    []byte // all of it is used; grown up to max
	max    int
	n      int // bytes peeked so far
	enough func([]byte) bool
	done   bool  // enough said so
	err    error // recv error, or ErrFull
	closed bool  // the peer can send no more bytes

	budget  *Budget // what the buffer's growth is drawn from, if anything
	charged int64   // bytes taken from budget
	raised  bool    // the socket's receive buffer was made to hold max bytes
}

// surelyQueued is what a socket's default receive buffer holds unread:
// with Linux's defaults (tcp_rmem 131072) about 96 KiB of a peer's bytes
// wait in it before the window closes, and a peek for more would wait
// until its deadline for bytes that cannot come.
const surelyQueued = 64 << 10

// raiseRcvbuf makes the receive buffer of the socket fd hold max bytes
// unread (the kernel doubles the value for its own overhead, and caps it
// at net.core.rmem_max), so that a peek of more than the default holds
// can complete. It fixes the buffer's size for the rest of the
// connection (no more autotuning), which is why it is done only for the
// rare peek that needs it. It never lowers the buffer; a failure leaves
// the peek to its deadline, as before.
func raiseRcvbuf(fd uintptr, max int) {
	if cur, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil && cur >= 2*max {
		return
	}
	unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, max)
}

// try is the callback of syscall.RawConn.Read: it reports whether Until is
// finished, or false to wait until the socket is readable again.
func (p *peeker) try(fd uintptr) bool {
	for {
		m, e := rawsys.RecvPeek(int(fd), p.buf)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return false // wait for bytes
		case e != nil:
			p.err = fmt.Errorf("peek after %d bytes: recv: %w", p.n, e)
			return true
		}
		if p.n = m; p.n == 0 {
			return true // EOF
		}
		if p.done = p.enough(p.buf[:p.n]); p.done {
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
			var err error
			if p.closed, err = peerDone(fd); err != nil {
				p.err = fmt.Errorf("peek after %d bytes: %w", p.n, err)
				return true
			}
			if p.closed {
				continue // peek once more: every byte sent is here now
			}
			return false // wait for more bytes
		}
		if len(p.buf) >= p.max {
			p.err = fmt.Errorf("%w: %d bytes", ErrFull, len(p.buf))
			return true
		}
		grow := min(len(p.buf), p.max-len(p.buf))
		if !p.raised && len(p.buf)+grow > surelyQueued {
			p.raised = true
			raiseRcvbuf(fd, p.max)
		}
		if p.budget != nil {
			if err := p.budget.charge(&p.charged, len(p.buf)+grow); err != nil {
				p.err = err
				return true
			}
		}
		// Exactly the size charged (append would round it up).
		nb := make([]byte, len(p.buf)+grow)
		copy(nb, p.buf[:p.n])
		p.buf = nb
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

// ErrNotYet means Once found fewer bytes than were wanted: more may come.
var ErrNotYet = errors.New("peek: not all there yet")

// Once peeks at the socket fd (non-blocking, outside the Go runtime's
// poller) a single time, without waiting, and reports what enough says of
// the bytes that have arrived: nil if enough, ErrNotYet if they are too
// few for now or fill buf, io.EOF if the peer closed without a byte. It
// is the fast path for a socket whose first bytes usually arrived with
// the connection; a caller that gets ErrNotYet waits with Until.
func Once(fd int, buf []byte, enough func(b []byte) bool) ([]byte, error) {
	buf = buf[:cap(buf)]
	for {
		n, err := rawsys.RecvPeek(fd, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return buf[:0], ErrNotYet
		case err != nil:
			return buf[:0], fmt.Errorf("peek: recv: %w", err)
		case n == 0:
			return buf[:0], io.EOF
		case enough(buf[:n]):
			return buf[:n], nil
		}
		return buf[:n], ErrNotYet
	}
}
