package relay

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snitools/snitools/lib/rawsys"
)

const (
	// pipeSize is the capacity of each splice pipe: the most bytes one
	// direction has in flight inside the proxy.
	pipeSize = 256 << 10
	// maxFreePipes bounds the pool of idle pipes per loop (the engine's
	// bound on all its pipes may lower it).
	maxFreePipes = 64
	// copyBufSize is the loop's buffer for bursts copied through user
	// space; a burst that fills it is spliced instead.
	copyBufSize = 64 << 10
	// sweepEvery is how often a loop looks for idle connections.
	sweepEvery = time.Second
	maxEvents  = 256
)

// pipe is a pipe's two descriptors; the zero value holds none.
type pipe struct {
	r, w int
	ok   bool
}

func (p pipe) valid() bool { return p.ok }

// loop is one event loop: an epoll instance, the connections registered
// with it, and a pool of pipes. Its goroutine does all the relaying for
// them; other goroutines only add connections and ask for aborts, under mu.
type loop struct {
	epfd, wakefd int
	mu           sync.Mutex
	ends         []endpoint // by descriptor
	conns        map[*conn]struct{}
	aborts       []*conn
	free         []pipe
	maxFree      int         // bound on free
	pipes        *pipeBudget // the engine's, shared by its loops
	buf          []byte      // copyBufSize, for copyBurst
	ended        []ending    // finished, their done not called yet
	now          int64
	stopping     bool
	stopped      chan struct{}
}

func newLoop(pipes *pipeBudget, maxFree int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll_create: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("relay: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("relay: epoll_ctl: %w", err)
	}
	l := &loop{epfd: epfd, wakefd: wakefd, conns: map[*conn]struct{}{}, buf: make([]byte, copyBufSize), stopped: make(chan struct{}), now: time.Now().UnixNano(),
		pipes: pipes, maxFree: maxFree}
	go l.run()
	return l, nil
}

// add registers a connection. Edge-triggered registration reports bytes
// already waiting at once, so nothing peeked-but-unread is forgotten. The
// loop's lock is held until both descriptors are registered, so that the
// loop cannot finish (and close) the connection halfway; on failure the
// connection is unregistered again and left to the caller, done unsaid.
//
// unsent are bytes for the backend that the caller already took from the
// client (the hello it peeked) and could not write at once: they wait in
// a pipe like any others, the backend registered for writability.
func (l *loop) add(c *conn, unsent []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping {
		return errors.New("relay: engine closed")
	}
	if len(unsent) > 0 {
		if err := l.park(&c.dir[0], unsent); err != nil {
			l.dropPipe(&c.dir[0])
			return fmt.Errorf("relay: %w", err)
		}
		c.writeWait[1] = true
	}
	for side, fd := range c.fd {
		for fd >= len(l.ends) {
			l.ends = append(l.ends, make([]endpoint, len(l.ends)+64)...)
		}
		l.ends[fd] = endpoint{c: c, side: side}
	}
	for i, fd := range c.fd {
		events := uint32(readEvents)
		if c.writeWait[i] {
			events = writeEvents
		}
		if err := rawsys.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, events); err != nil {
			for _, added := range c.fd[:i] {
				unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, added, nil)
			}
			for _, fd := range c.fd {
				l.ends[fd] = endpoint{}
			}
			l.dropPipe(&c.dir[0])
			return fmt.Errorf("relay: epoll_ctl add: %w", err)
		}
	}
	c.last = l.now
	l.conns[c] = struct{}{}
	return nil
}

// A socket is registered for reading only (edge-triggered, with the
// peer's end of stream), and for writing only once a write could not be
// completed: a UNIX socket reports room to write every time its reader
// takes bytes, and those events would wake the loop for nothing on
// almost every connection.
const (
	readEvents  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET
	writeEvents = readEvents | unix.EPOLLOUT
)

// waitWritable makes sure the loop hears when side's socket can take
// bytes again. Changing the registration reports a socket that already
// can, so no moment is missed. It stays registered for writing from then
// on: a connection that met backpressure once likely meets it again.
func (l *loop) waitWritable(c *conn, side int) error {
	if c.writeWait[side] {
		return nil
	}
	if err := rawsys.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd[side], writeEvents); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	c.writeWait[side] = true
	return nil
}

// abort asks the loop to cut c.
func (l *loop) abort(c *conn) {
	l.mu.Lock()
	l.aborts = append(l.aborts, c)
	l.mu.Unlock()
	l.wake()
}

func (l *loop) wake() {
	var one = [8]byte{1}
	unix.Write(l.wakefd, one[:])
}

func (l *loop) stop() {
	l.mu.Lock()
	already := l.stopping
	l.stopping = true
	l.mu.Unlock()
	if already {
		<-l.stopped
		return
	}
	l.wake()
	<-l.stopped
}

func (l *loop) run() {
	defer close(l.stopped)
	// The loop waits for its epoll descriptor on the Go runtime's own
	// poller, like any network goroutine, and then collects the events
	// without blocking. A blocking epoll_wait would pin an OS thread and
	// make the scheduler hand its processor around at every wait, which
	// costs more than the relaying.
	if err := unix.SetNonblock(l.epfd, true); err != nil {
		panic(fmt.Sprintf("relay: epoll descriptor: %v", err)) // a bug, never input
	}
	f := os.NewFile(uintptr(l.epfd), "relay-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		panic(fmt.Sprintf("relay: epoll descriptor: %v", err))
	}
	events := make([]unix.EpollEvent, maxEvents)
	lastSweep := time.Now()
	for {
		f.SetReadDeadline(lastSweep.Add(sweepEvery))
		rc.Read(func(uintptr) bool { return l.collect(events) })
		now := time.Now()
		l.mu.Lock()
		if now.Sub(lastSweep) >= sweepEvery {
			l.now = now.UnixNano()
			l.sweep()
			lastSweep = now
		}
		if l.stopping {
			for c := range l.conns {
				l.finish(c, ErrAborted)
			}
			for _, p := range l.free {
				l.closePipe(p)
			}
			l.mu.Unlock()
			l.reportEnded()
			f.Close() // closes epfd
			unix.Close(l.wakefd)
			return
		}
		l.mu.Unlock()
		l.reportEnded()
	}
}

// collect handles every ready event and reports whether the loop should
// look up from its waiting (to stop), or false to wait for more events.
func (l *loop) collect(events []unix.EpollEvent) bool {
	for {
		n, err := rawsys.EpollReady(l.epfd, events)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			panic(fmt.Sprintf("relay: epoll_wait: %v", err)) // a bug, never input
		}
		l.mu.Lock()
		l.now = time.Now().UnixNano()
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == l.wakefd {
				var buf [8]byte
				unix.Read(l.wakefd, buf[:])
				continue
			}
			if fd < len(l.ends) && l.ends[fd].c != nil {
				l.pump(l.ends[fd], ev.Events)
			}
		}
		for _, c := range l.aborts {
			l.finish(c, ErrAborted)
		}
		l.aborts = l.aborts[:0]
		stopping := l.stopping
		l.mu.Unlock()
		l.reportEnded()
		if stopping {
			return true
		}
		if n < len(events) {
			return false // drained: wait for the next readiness
		}
	}
}

// sweep cuts connections idle for longer than their timeout.
func (l *loop) sweep() {
	for c := range l.conns {
		if c.idle > 0 && l.now-c.last > int64(c.idle) {
			l.finish(c, ErrIdle)
		}
	}
}

// pump moves what an event on one side of a connection lets move: bytes
// to read from that side go one way, room to write to that side lets the
// other way resume if it was waiting for it. Only those directions are
// tried, which saves the system calls that would only say EAGAIN. pump
// finishes the connection when both directions are done or one failed.
func (l *loop) pump(e endpoint, events uint32) {
	c := e.c
	if c.finished {
		return
	}
	const readable = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	const writable = unix.EPOLLOUT | unix.EPOLLHUP | unix.EPOLLERR
	// What the event says of the peer holds from now on: these states
	// do not go back.
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		c.fin[e.side] = true
	}
	if events&unix.EPOLLERR != 0 {
		c.failed[e.side] = true
	}
	if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		// Both ways are down (a UNIX peer closed, a TCP connection
		// reset or closed both ways): a write could only fail.
		c.gone[e.side] = true
	}
	var dirs [2]bool
	dirs[e.side] = events&readable != 0 // direction side reads from this side
	dirs[1-e.side] = events&writable != 0 && (c.dir[1-e.side].pending > 0 || c.dir[1-e.side].blocked)
	for i, try := range dirs {
		if !try {
			continue
		}
		if err := l.pumpDirection(c, i); err != nil {
			name := [2]string{"client to backend", "backend to client"}[i]
			l.finish(c, fmt.Errorf("%s: %w", name, err))
			return
		}
	}
	if c.dir[0].shut && c.dir[1].shut {
		l.finish(c, nil)
	}
}

// pumpDirection moves direction i's bytes until its source has nothing
// more for now, its sink takes nothing more for now (backpressure: the
// source is then left unread), or its source ended and the end was passed
// on.
//
// Bytes go one of two ways. A burst that fits the loop's buffer is read
// into it and written straight out: two system calls, where splice takes
// three (in, out, and the one more that says the source is empty). What
// the sink does not take at once is parked in a pipe, the direction's
// only buffer, until the sink is writable again. A burst that fills the
// buffer is a stream: it is spliced through a pipe, so that large
// transfers are not copied through user space.
func (l *loop) pumpDirection(c *conn, i int) error {
	d := &c.dir[i]
	src, dst := c.fd[i], c.fd[1-i]
	for {
		if d.pending > 0 && c.gone[1-i] {
			l.sinkGone(d) // what a write would say, without the write
			return nil
		}
		if d.pending > 0 {
			n, err := rawsys.Splice(d.pipe.r, dst, d.pending)
			switch {
			case err == unix.EAGAIN:
				return l.waitWritable(c, 1-i)
			case err == unix.EINTR:
				continue
			case peerGone(err):
				l.sinkGone(d)
				return nil
			case err != nil:
				return fmt.Errorf("write: %w", err)
			}
			d.pending -= n
			d.moved += int64(n)
			c.last = l.now
			if d.pending > 0 {
				continue
			}
		}
		if d.eof {
			if !d.shut {
				if err := rawsys.ShutdownWrite(dst); err != nil && err != unix.ENOTCONN {
					return fmt.Errorf("half-close: %w", err)
				}
				d.shut = true
			}
			l.releasePipe(d)
			return nil
		}
		if d.stream {
			if err := l.holdPipe(d); err == errNoPipe {
				d.stream = false // all pipes in use: copy instead
			} else if err != nil {
				return err
			}
		}
		if !d.stream {
			l.releasePipe(d)
			drained, err := l.copyBurst(c, i)
			if drained || err != nil || d.pending > 0 {
				return err
			}
			continue
		}
		n, err := rawsys.Splice(src, d.pipe.w, pipeSize)
		switch {
		case err == unix.EAGAIN:
			// The stream paused: the next burst starts in the buffer
			// again, and the pipe goes back to the pool.
			d.stream = false
			l.releasePipe(d)
			return nil // wait until src is readable
		case err == unix.EINTR:
			continue
		case peerGone(err) && c.dir[1-i].shut:
			// A reset after we passed on the other side's end: the
			// source closed with bytes unread, as clients do.
			d.eof = true
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case n == 0:
			d.eof = true
		default:
			d.pending += n
			c.last = l.now
		}
	}
}

// copyBurst reads what direction i's source has, up to the loop's buffer,
// and writes it to the sink; what the sink does not take goes into a pipe
// (pending). It reports drained when the source has nothing more for now:
// a read shorter than the buffer emptied the socket, and with
// edge-triggered epoll any later bytes bring a new event, so the read that
// would only say EAGAIN is saved. Once the source's peer has sent its end
// (EPOLLRDHUP), a short read was its last bytes, and the read that would
// return 0 is saved as well; after an error, the source is read until it
// reports it.
//
// When the engine's pipes are all in use, there is nowhere to park what
// the sink does not take: the burst is then peeked (MSG_PEEK) rather than
// read, and only what the sink took is consumed; the rest waits in the
// source socket (blocked) until the sink is writable, as a spliced stream
// waits in its pipe. One more system call per burst, no memory.
func (l *loop) copyBurst(c *conn, i int) (drained bool, _ error) {
	d := &c.dir[i]
	src, dst := c.fd[i], c.fd[1-i]
	d.blocked = false
	pipeless := false
	if !d.pipe.valid() && len(l.free) == 0 {
		// Make sure of a pipe to park in before reading, or peek.
		switch err := l.holdPipe(d); err {
		case nil:
			defer l.releasePipe(d) // unless bytes were parked in it
		case errNoPipe:
			pipeless = true
		default:
			return false, err
		}
	}
	var n int
	var err error
	if pipeless {
		n, err = rawsys.RecvPeek(src, l.buf)
	} else {
		n, err = rawsys.Read(src, l.buf)
	}
	switch {
	case err == unix.EAGAIN:
		return true, nil
	case err == unix.EINTR:
		return false, nil
	case peerGone(err) && c.dir[1-i].shut:
		d.eof = true
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read: %w", err)
	case n == 0:
		d.eof = true
		return false, nil
	}
	if !pipeless {
		c.last = l.now
	}
	if c.gone[1-i] {
		// The usual end: a client's close_notify for a backend that has
		// closed. Dropped as a write would be, by EPIPE, without it.
		l.sinkGone(d)
		return true, l.consume(src, pipeless, n)
	}
	w, err := rawsys.Send(dst, l.buf[:n])
	switch {
	case err == unix.EAGAIN, err == unix.EINTR:
		w = 0
	case peerGone(err):
		l.sinkGone(d)
		return true, l.consume(src, pipeless, n)
	case err != nil:
		return false, fmt.Errorf("write: %w", err)
	}
	d.moved += int64(w)
	if pipeless {
		if w > 0 {
			// Peeking the same bytes again while the sink takes
			// none is not activity.
			c.last = l.now
		}
		if err := l.consume(src, true, w); err != nil {
			return false, err
		}
		if w < n {
			d.blocked = true
			return true, l.waitWritable(c, 1-i)
		}
	} else if w < n {
		if err := l.park(d, l.buf[w:n]); err != nil {
			return false, err
		}
		return false, l.waitWritable(c, 1-i)
	}
	if n == len(l.buf) {
		d.stream = c.spliceFrom(i) // more is likely waiting
		return false, nil
	}
	switch {
	case c.failed[i]:
		return false, nil // read again: the error is the next read's to report
	case c.fin[i]:
		// The peer had sent its end before this read: a short read was
		// the last of its bytes, and the read that would return 0 is
		// saved too.
		d.eof = true
		return false, nil
	}
	return true, nil
}

// consume takes n bytes that copyBurst peeked (pipeless) out of the
// source: they were delivered, or dropped for a sink that has gone.
func (l *loop) consume(src int, pipeless bool, n int) error {
	for pipeless && n > 0 {
		m, err := rawsys.Read(src, l.buf[:n])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case m == 0:
			return nil
		}
		n -= m
	}
	return nil
}

// park puts bytes the sink did not take into the direction's pipe, to be
// spliced out when the sink is writable. The pipe is empty (pending is 0
// whenever a burst is read) and holds more than the buffer, so it takes
// them all.
func (l *loop) park(d *direction, b []byte) error {
	if err := l.holdPipe(d); err != nil {
		return err
	}
	for len(b) > 0 {
		n, err := rawsys.Write(d.pipe.w, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("buffer %d bytes in a pipe: %w", len(b), err)
		}
		d.pending += n
		b = b[n:]
	}
	return nil
}

// sinkGone ends a direction whose sink has closed and takes no more: the
// usual end of a connection (a server closing after its answer, with the
// client's close_notify still on the way), not a failure in itself. What
// it did not take is dropped; the other direction still delivers what the
// sink sent before, and reports a reset if there was one.
func (l *loop) sinkGone(d *direction) {
	l.dropPipe(d)
	d.eof, d.shut = true, true
}

// peerGone reports errors that mean the other end has closed.
func peerGone(err error) bool { return err == unix.EPIPE || err == unix.ECONNRESET }

// finish closes c's descriptors and pipes and reports its end.
func (l *loop) finish(c *conn, err error) {
	if c.finished {
		return
	}
	c.finished = true
	for _, fd := range c.fd {
		l.ends[fd] = endpoint{}
		rawsys.Close(fd) // also removes it from the epoll set
	}
	for i := range c.dir {
		l.dropPipe(&c.dir[i])
	}
	delete(l.conns, c)
	l.ended = append(l.ended, ending{c, err})
}

// ending is a finished connection and how it ended.
type ending struct {
	c   *conn
	err error
}

// reportEnded calls done for the connections that finished, on the loop's
// goroutine but outside its lock: done may take locks of its own, which
// others hold while they ask the loop to abort a connection.
func (l *loop) reportEnded() {
	for i, e := range l.ended {
		e.c.done(e.c.stats(), e.err)
		l.ended[i] = ending{}
	}
	l.ended = l.ended[:0]
}

// holdPipe gives direction d a pipe from the pool if it has none.
func (l *loop) holdPipe(d *direction) error {
	if d.pipe.valid() {
		return nil
	}
	p, err := l.getPipe()
	d.pipe = p
	return err
}

func (l *loop) releasePipe(d *direction) {
	if d.pipe.valid() && d.pending == 0 {
		l.putPipe(d.pipe)
		d.pipe = pipe{}
	}
}

// dropPipe gives a direction's pipe back to the pool, first emptying it of
// bytes nobody will read if there are few (the usual case: a close_notify
// for a peer that has gone), else closing it.
func (l *loop) dropPipe(d *direction) {
	if !d.pipe.valid() {
		return
	}
	for d.pending > 0 && d.pending <= len(l.buf) {
		n, err := rawsys.Read(d.pipe.r, l.buf[:d.pending])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		d.pending -= n
	}
	if d.pending == 0 {
		l.putPipe(d.pipe)
	} else {
		l.closePipe(d.pipe)
	}
	d.pipe, d.pending = pipe{}, 0
}

// errNoPipe says that the engine's pipes are all in use.
var errNoPipe = errors.New("relay: every pipe in use")

func (l *loop) getPipe() (pipe, error) {
	if n := len(l.free); n > 0 {
		p := l.free[n-1]
		l.free = l.free[:n-1]
		return p, nil
	}
	if !l.pipes.take() {
		return pipe{}, errNoPipe
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		l.pipes.give()
		return pipe{}, fmt.Errorf("pipe: %w", err)
	}
	// A larger pipe means fewer system calls per byte; if the system
	// limit refuses it, the default 64 KiB still works.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize)
	return pipe{r: fds[0], w: fds[1], ok: true}, nil
}

func (l *loop) putPipe(p pipe) {
	if len(l.free) < l.maxFree {
		l.free = append(l.free, p)
		return
	}
	l.closePipe(p)
}

func (l *loop) closePipe(p pipe) {
	rawsys.Close(p.r)
	rawsys.Close(p.w)
	l.pipes.give()
}
