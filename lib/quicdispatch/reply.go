package quicdispatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/snitools/snitools/lib/dispatch"
	"golang.org/x/sys/unix"
)

// The backend's answers are most of a flow's traffic (an HTTP/3 download
// is datagrams down and a few acknowledgments up), so their path does as
// few system calls and wakeups as it can:
//
//   - the flow's socket to the backend asks for UDP_GRO: a burst of
//     same-size datagrams (which a QUIC server sends with UDP_SEGMENT,
//     as quic-go does) is read in one call, and sent on to the client
//     in one call with UDP_SEGMENT, the kernel cutting it up again;
//   - it is read without blocking while data is queued, and waited on
//     with the runtime's poller only when the queue is empty, so a
//     flow holds a read buffer only while it reads (from replyBuffers);
//   - its receive buffer is raised (FlowBuffer), since a download's
//     datagrams arrive faster than one goroutine wakes up.
//
// Where the kernel cannot send with UDP_SEGMENT (a device without
// checksum offload answers EIO), the datagrams are sent one by one from
// then on.

// FlowBuffer is the receive buffer asked for each flow's socket to its
// backend (capped by net.core.rmem_max unless snilisten may force it).
const FlowBuffer = 1 << 20

// maxCoalesced is the most a read with UDP_GRO returns: 64 segments,
// at most 64 KiB in all.
const maxCoalesced = 65535

var replyBuffers = sync.Pool{New: func() any { b := make([]byte, maxCoalesced); return &b }}

// replyOOB holds the UDP_GRO control message of a read.
var replyOOBSize = unix.CmsgSpace(4)

// prepareBackendSocket raises the receive buffer and asks for UDP_GRO,
// both best effort; it reports whether GRO is on.
func prepareBackendSocket(rc syscall.RawConn) (gro bool) {
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, FlowBuffer) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, FlowBuffer)
		}
		gro = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	})
	return gro
}

// replies relays the backend's datagrams to the client until the flow
// ends, then removes and reports it.
func (f *flow) replies() {
	s := f.s
	rc, err := f.backend.SyscallConn()
	if err != nil {
		f.end(dispatch.OutcomeRelayError, fmt.Errorf("backend socket %s: %w", f.backendAddr, err))
	} else {
		gro := prepareBackendSocket(rc)
		var touched time.Time
		var readErr error
		oob := make([]byte, replyOOBSize)
		err = rc.Read(func(fd uintptr) bool {
			bp := replyBuffers.Get().(*[]byte)
			defer replyBuffers.Put(bp)
			buf := *bp
			for {
				n, oobn, flags, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
				switch {
				case err == unix.EAGAIN:
					return false // wait on the poller
				case err == unix.EINTR:
					continue
				case err != nil:
					readErr = err
					return true
				case flags&unix.MSG_TRUNC != 0:
					continue // over maxCoalesced: cannot happen with GRO, and no datagram is larger
				}
				segment := n
				if gro && oobn > 0 {
					segment = groSegment(oob[:oobn], n)
				}
				f.send(buf[:n], segment)
				// The table learns the flow is alive at most every
				// touchEvery: its idle timeout is counted in seconds or
				// minutes, and the lock is shared with every read loop.
				if now := time.Now(); now.Sub(touched) >= touchEvery {
					touched = now
					s.mu.Lock()
					s.table.Touch(now, f.client)
					s.mu.Unlock()
				}
			}
		})
		if readErr != nil {
			err = readErr
		}
		switch {
		case err == nil, errors.Is(err, net.ErrClosed):
		case errors.Is(err, unix.ECONNREFUSED):
			f.end(dispatch.OutcomeBackendError, fmt.Errorf("backend %s: %w", f.backendAddr, err))
		default:
			f.end(dispatch.OutcomeRelayError, fmt.Errorf("read from backend %s: %w", f.backendAddr, err))
		}
	}
	s.mu.Lock()
	delete(s.flows, f)
	if b, ok := s.table.Touch(time.Now(), f.client); ok && b == f {
		s.table.Close(f.client)
	}
	s.mu.Unlock()
	f.report()
}

// groSegment returns the segment size of a coalesced read from its
// UDP_GRO control message, or n if there is none (one datagram).
func groSegment(oob []byte, n int) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return n
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_UDP && m.Header.Type == unix.UDP_GRO && len(m.Data) >= 4 {
			if seg := int(binary.NativeEndian.Uint32(m.Data)); seg > 0 && seg < n {
				return seg
			}
		}
	}
	return n
}

// send sends b to the client as datagrams of segment bytes (the last
// one shorter): in one call with UDP_SEGMENT, or one by one. Errors
// lose the datagrams, as the network could; the client's QUIC stack
// sends again.
func (f *flow) send(b []byte, segment int) {
	count := (len(b) + segment - 1) / segment
	if count > 1 && !f.s.noGSO.Load() {
		if segment != f.segment {
			f.segment = segment
			f.segmentOOB = append(append(f.segmentOOB[:0], f.oob...), udpSegment(segment)...)
		}
		_, _, err := f.pc.WriteMsgUDPAddrPort(b, f.segmentOOB, f.client)
		if err == nil {
			f.down.Add(int64(len(b)))
			f.datagramsDown.Add(int64(count))
			return
		}
		if !errors.Is(err, unix.EIO) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EOPNOTSUPP) {
			return
		}
		if f.s.noGSO.CompareAndSwap(false, true) {
			f.s.cfg.Log.Info("sending QUIC datagrams one by one: the kernel refused UDP_SEGMENT", "error", err.Error())
		}
	}
	for off := 0; off < len(b); off += segment {
		d := b[off:min(off+segment, len(b))]
		if _, _, err := f.pc.WriteMsgUDPAddrPort(d, f.oob, f.client); err == nil {
			f.down.Add(int64(len(d)))
			f.datagramsDown.Add(1)
		}
	}
}

// udpSegment is the UDP_SEGMENT control message for a segment size.
func udpSegment(size int) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b
}
