// Package relay copies bytes both ways between a client and a backend
// connection until both sides are done, the way a TCP proxy should: each
// direction on its own, one side's end of stream passed on as a half-close
// (shutdown(SHUT_WR)) while the other direction keeps flowing, and the
// kernel moving the bytes with splice(2) where the connections allow it
// (TCP to TCP or UNIX stream, in either direction: net's io.Copy paths).
package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrIdle is returned when neither side sent anything for the idle timeout,
// or one side stopped reading for that long.
var ErrIdle = errors.New("idle timeout")

// Stats counts the bytes moved in each direction.
type Stats struct {
	Up   int64 // client to backend
	Down int64 // backend to client
}

// Relay copies client to backend and backend to client at the same time
// until both directions reached end of stream, or one failed, or the
// connection was idle for idle (0: never). It closes both connections
// before it returns. The error is nil when both sides finished cleanly;
// otherwise it is the first failure, which ends both directions.
//
// Idle is measured per connection, not per direction: a long download with
// a silent upload direction is not idle. Checks happen once per idle
// period, so an idle connection is closed between idle and twice idle after
// its last byte.
func Relay(client, backend net.Conn, idle time.Duration) (Stats, error) {
	var (
		up, down   direction
		stats      Stats
		upErr      error
		closeOnce  sync.Once
		wg         sync.WaitGroup
		closeBoth  = func() { closeOnce.Do(func() { client.Close(); backend.Close() }) }
		pumpAndEnd = func(d *direction, peer *direction, dst, src net.Conn, n *int64, err *error) {
			*n, *err = d.pump(dst, src, peer, idle)
			if *err != nil {
				closeBoth() // unblock the other direction
			}
		}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		pumpAndEnd(&up, &down, backend, client, &stats.Up, &upErr)
	}()
	var downErr error
	pumpAndEnd(&down, &up, client, backend, &stats.Down, &downErr)
	wg.Wait()
	closeBoth()
	switch {
	case upErr != nil && (downErr == nil || errors.Is(downErr, net.ErrClosed)):
		return stats, fmt.Errorf("client to backend: %w", upErr)
	case downErr != nil:
		return stats, fmt.Errorf("backend to client: %w", downErr)
	}
	return stats, nil
}

// direction is one way of the relay, with what the other way needs to know
// to tell an idle connection from a busy one without a timer per byte.
type direction struct {
	windows atomic.Uint64 // idle periods completed (the copy returned)
	quiet   atomic.Bool   // the last period moved nothing, or the direction is done
}

// pump copies src to dst until src's end of stream (then half-closes dst)
// or an error. With an idle timeout, the copy is cut into periods by src's
// read deadline; at the end of a period that moved nothing, the connection
// is idle if the other direction is quiet too, or if it has not completed a
// period in two of ours (it is stuck writing to a peer that does not read).
func (d *direction) pump(dst, src net.Conn, peer *direction, idle time.Duration) (int64, error) {
	var (
		total        int64
		peerWindows  uint64
		peerStuckFor int
	)
	for {
		if idle > 0 {
			src.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := io.Copy(dst, src)
		total += n
		d.windows.Add(1)
		switch {
		case err == nil: // end of stream
			d.quiet.Store(true)
			if err := closeWrite(dst); err != nil {
				return total, err
			}
			return total, nil
		case !errors.Is(err, os.ErrDeadlineExceeded):
			return total, err
		case n > 0:
			d.quiet.Store(false)
			peerStuckFor = 0
			continue
		}
		d.quiet.Store(true)
		if peer.quiet.Load() {
			return total, ErrIdle
		}
		if w := peer.windows.Load(); w != peerWindows {
			peerWindows, peerStuckFor = w, 0
		} else if peerStuckFor++; peerStuckFor >= 2 {
			return total, fmt.Errorf("%w: peer stopped reading", ErrIdle)
		}
	}
}

// closeWrite passes on an end of stream: shutdown(SHUT_WR) where the
// connection supports it, else a full close.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		// ENOTCONN: the peer is already gone; the other direction
		// reports how it ended.
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ENOTCONN) {
			return fmt.Errorf("half-close: %w", err)
		}
		return nil
	}
	return c.Close()
}
