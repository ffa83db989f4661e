// Package relay copies bytes both ways between a client and a backend
// connection until both sides are done, the way a TCP proxy should: each
// direction on its own, one side's end of stream passed on as a half-close
// (shutdown(SHUT_WR)) while the other direction keeps flowing, bytes moved
// by the kernel with splice(2), and backpressure instead of buffering when
// one side is slow.
//
// A relayed connection costs no goroutine while it waits. Start takes the
// two sockets' descriptors out of the Go runtime (StartFDs takes them
// straight from accept4 and connect) and gives them to one of a few event
// loops (an Engine, about one per CPU) that wait for readiness with
// edge-triggered epoll. A burst that fits the loop's 64 KiB buffer is
// copied through it (read, write: the fewest system calls for the small
// records of a TLS handshake); a stream is spliced through a pipe. Pipes
// come from a pool and are held only while bytes are in flight: what a
// slow sink has not taken waits in one, never in user space. The pipes
// are bounded in all (NewEngineWithPipes), so that the descriptors a
// relay takes are known in advance: a connection that finds none copies
// through the loop's buffer, peeking at its source and consuming only
// what the sink took. An idle
// connection is then a few hundred bytes of bookkeeping, where two
// goroutines parked in io.Copy cost two stacks and two pipes.
package relay

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snitools/snitools/lib/rawsys"
)

// ErrIdle is returned when nothing moved in either direction for the idle
// timeout.
var ErrIdle = errors.New("idle timeout")

// ErrAborted is returned for a session closed with Session.Close.
var ErrAborted = errors.New("relay aborted")

// Stats counts the bytes moved in each direction.
type Stats struct {
	Up   int64 // client to backend
	Down int64 // backend to client
}

// DescriptorsPerConn is the file descriptors a relayed connection holds
// of its own: its two sockets. The splice pipes it uses while bytes are
// in flight come from the engine's pipes, of which there are at most
// MaxPipes (PipeDescriptors); a connection that finds none copies through
// the loop's buffer, reading from its source only what the sink takes.
// Limits on concurrent connections derived from the descriptor limit
// count two per connection plus PipeDescriptors.
const DescriptorsPerConn = 2

// PoolDescriptors is the most file descriptors the idle pipes pooled by
// an engine of n event loops hold.
func PoolDescriptors(n int) int {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return 2 * maxFreePipes * n
}

// DefaultMaxPipes bounds an engine's pipes, held and pooled, when its
// maker gives no bound (NewEngine).
const DefaultMaxPipes = 1024

// MaxPipes is the bound on an engine's pipes for a process with the
// given descriptor limit: a sixteenth of it, between 8 and
// DefaultMaxPipes. A pipe only saves copying through user space, and
// holds what a slow sink has not taken (256 KiB): 1024 of them stream a
// few hundred connections at once at full speed, and the rest go on
// copying.
func MaxPipes(fdLimit int) int { return min(max(fdLimit/16, 8), DefaultMaxPipes) }

// PipeDescriptors is the most file descriptors maxPipes pipes hold.
func PipeDescriptors(maxPipes int) int { return 2 * maxPipes }

// Engine runs the event loops that relay connections.
type Engine struct {
	loops []*loop
	next  atomic.Uint32
	pipes pipeBudget
}

// NewEngine starts n event loops (GOMAXPROCS if n <= 0), with at most
// DefaultMaxPipes pipes.
func NewEngine(n int) (*Engine, error) { return NewEngineWithPipes(n, DefaultMaxPipes) }

// NewEngineWithPipes starts n event loops (GOMAXPROCS if n <= 0) that
// hold at most maxPipes splice pipes among them, in use and pooled
// (DefaultMaxPipes if maxPipes <= 0), so that the descriptors a relay
// may take are known in advance, whatever the connections do.
func NewEngineWithPipes(n, maxPipes int) (*Engine, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if maxPipes <= 0 {
		maxPipes = DefaultMaxPipes
	}
	e := &Engine{}
	e.pipes.max = int64(maxPipes)
	// Each loop keeps idle pipes for reuse, but not so many that
	// another loop finds none.
	maxFree := min(maxFreePipes, max(maxPipes/n, 1))
	for range n {
		l, err := newLoop(&e.pipes, maxFree)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.loops = append(e.loops, l)
	}
	return e, nil
}

// Close aborts every session and stops the loops.
func (e *Engine) Close() {
	for _, l := range e.loops {
		l.stop()
	}
}

// Session is a connection being relayed.
type Session struct {
	c *conn
	l *loop
}

// Close cuts the connection now; done is called with ErrAborted unless
// the relay had already finished. It may be called from any goroutine.
func (s *Session) Close() error {
	s.l.abort(s.c)
	return nil
}

// Start relays between client and backend until both directions reached
// end of stream, one failed, or nothing moved for idle (0: never), then
// closes both and calls done, with a nil error when both sides finished
// cleanly. done runs on the event loop, which relays other connections:
// it must return quickly and never block (hand slow work, like a log
// write that may wait, to a goroutine). From the moment Start returns,
// the relay owns the connections: client and backend themselves are
// closed and their descriptors live on in the engine. Bytes already
// waiting in either socket, such as a ClientHello only peeked, are
// relayed.
func (e *Engine) Start(client, backend net.Conn, idle time.Duration, done func(Stats, error)) (*Session, error) {
	cfd, err := detachFD(client)
	if err != nil {
		return nil, fmt.Errorf("relay client: %w", err)
	}
	bfd, err := detachFD(backend)
	if err != nil {
		unix.Close(cfd)
		return nil, fmt.Errorf("relay backend: %w", err)
	}
	client.Close()
	backend.Close()
	s, err := e.StartFDs(cfd, bfd, 0, nil, idle, done)
	if err != nil {
		unix.Close(cfd)
		unix.Close(bfd)
	}
	return s, err
}

// StartFDs is Start for two connected, non-blocking stream socket
// descriptors outside the Go runtime (from accept4 and connect, say),
// which it takes over when it succeeds; when it fails, they are still the
// caller's. It saves Start's duplicating and the runtime poller's
// registering and unregistering of each socket.
//
// sent and unsent are bytes the caller already read from the client:
// sent it wrote to the backend itself (they count in Stats.Up), unsent
// the relay writes before anything else (it keeps no reference to them).
func (e *Engine) StartFDs(client, backend int, sent int, unsent []byte, idle time.Duration, done func(Stats, error)) (*Session, error) {
	c := &conn{fd: [2]int{client, backend}, idle: idle, done: done}
	c.dir[0].moved = int64(sent)
	l := e.loops[int(e.next.Add(1))%len(e.loops)]
	if err := l.add(c, unsent); err != nil {
		return nil, err
	}
	return &Session{c: c, l: l}, nil
}

// detachFD duplicates a connection's descriptor (non-blocking, like the
// original: they share the open file description) so that it outlives
// the net.Conn, which Start then closes.
func detachFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(orig uintptr) {
		fd, derr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// pipeBudget counts an engine's pipes against its bound.
type pipeBudget struct {
	n   atomic.Int64
	max int64
}

// take counts one more pipe, unless the bound is reached.
func (b *pipeBudget) take() bool {
	if b.n.Add(1) > b.max {
		b.n.Add(-1)
		return false
	}
	return true
}

func (b *pipeBudget) give() { b.n.Add(-1) }

// conn is one relayed connection: side 0 is the client, side 1 the
// backend; dir[0] moves client to backend (up), dir[1] the other way.
type conn struct {
	fd        [2]int
	dir       [2]direction
	idle      time.Duration
	fin       [2]bool // the side's peer sent all it will (EPOLLRDHUP, EPOLLHUP)
	failed    [2]bool // the side reported an error (EPOLLERR): read it until it says so
	gone      [2]bool // the side takes no more bytes (EPOLLHUP, EPOLLERR)
	writeWait [2]bool // the side is registered for writability too
	domain    [2]int  // the sockets' address families, once asked
	last      int64   // loop time (ns) when bytes last moved
	done      func(Stats, error)
	finished  bool
}

// direction is one way of a connection: bytes copied from its source to
// its sink through the loop's buffer, or spliced through a pipe; the pipe
// is held only while bytes are in flight.
type direction struct {
	pipe    pipe
	pending int   // bytes in the pipe
	stream  bool  // the last burst filled the buffer: splice
	blocked bool  // no pipe: bytes wait in the source until the sink is writable
	moved   int64 // bytes delivered to the sink
	eof     bool  // the source ended its stream
	shut    bool  // the end was passed on (shutdown(SHUT_WR) of the sink)
}

// spliceFrom reports whether a stream from side is better spliced than
// copied. From a TCP socket, splice moves the kernel's pages without
// copying them; from a UNIX socket it copies anyway, and costs more than
// read and write through the loop's buffer (make bench, unix mode, 1 GiB
// down: 0.63 CPU-s spliced, 0.48 copied).
func (c *conn) spliceFrom(side int) bool {
	if c.domain[side] == 0 {
		c.domain[side] = rawsys.SocketDomain(c.fd[side])
	}
	return c.domain[side] != unix.AF_UNIX
}

// Stats returns what moved so far.
func (c *conn) stats() Stats { return Stats{Up: c.dir[0].moved, Down: c.dir[1].moved} }

// endpoint says which connection and side a descriptor belongs to.
type endpoint struct {
	c    *conn
	side int
}
