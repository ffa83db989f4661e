package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snitools/snitools/lib/hostname"
	"github.com/snitools/snitools/lib/rawsys"
)

// Unix connects to the UNIX socket Dir/<name>, or, if there is none, to the
// wildcard Dir/_.<parent>. Names reach it canonical (lib/hostname), so a
// name is always a single path element inside Dir.
//
// The socket's type says how the connection is passed: a SOCK_STREAM
// socket gets a relayed stream; a SOCK_SEQPACKET socket gets the client's
// socket itself (lib/handoff). The type is discovered by trying, since a
// stream connect to a seqpacket socket fails with EPROTOTYPE, and
// remembered for a few seconds per socket file.
type Unix struct {
	Dir       string
	seqpacket sync.Map // path -> seqpacketMemo
}

// seqpacketMemo remembers that the socket file at a path is SOCK_SEQPACKET.
type seqpacketMemo struct {
	until time.Time
	// The socket file: a server that replaces it makes a new one, whose
	// inode may be the old one's number but whose change time differs.
	dev, ino uint64
	ctime    syscall.Timespec
}

// seqpacketMemory is how long a path is remembered as a handoff socket.
// A server that replaces the socket is noticed at once: the file is new.
const seqpacketMemory = 5 * time.Second

// isSeqpacket reports whether path is remembered as the handoff socket
// that is still there.
func (u *Unix) isSeqpacket(path string) bool {
	v, ok := u.seqpacket.Load(path)
	if !ok {
		return false
	}
	m := v.(seqpacketMemo)
	var st syscall.Stat_t
	if time.Now().After(m.until) || syscall.Stat(path, &st) != nil || uint64(st.Dev) != m.dev || st.Ino != m.ino || st.Ctim != m.ctime {
		u.seqpacket.Delete(path)
		return false
	}
	return true
}

// rememberSeqpacket notes that path is a handoff socket.
func (u *Unix) rememberSeqpacket(path string) {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) == nil {
		u.seqpacket.Store(path, seqpacketMemo{until: time.Now().Add(seqpacketMemory), dev: uint64(st.Dev), ino: st.Ino, ctime: st.Ctim})
	}
}

// NewUnix returns a Unix dialer for the sockets in dir.
func NewUnix(dir string) *Unix { return &Unix{Dir: dir} }

// Dial connects to the first candidate socket that exists. A socket that
// exists but refuses (left behind by a crashed server) or that may not be
// opened is an error wrapping ErrRefused, not a reason to fall through to
// the wildcard: the operator's intent for that exact name is clear.
func (u *Unix) Dial(ctx context.Context, req Request) (Conn, error) {
	var d net.Dialer
	return u.dial(req, func(path string) (Conn, error) {
		c, err := d.DialContext(ctx, "unix", path)
		return Conn{Conn: c}, err
	})
}

// DialNow is Dial returning a non-blocking socket descriptor outside the
// Go runtime, for lib/relay.StartFDs: it saves registering the socket with
// the runtime's poller only to take it out again. Connecting to a UNIX
// socket never waits (a full backlog is an error, as it is for Dial), so
// neither does DialNow. fd is -1 when there is no socket: for an error, or
// for a handoff.
func (u *Unix) DialNow(req Request) (fd int, _ Conn, _ error) {
	fd = -1
	c, err := u.dial(req, func(path string) (Conn, error) {
		s, err := rawsys.ConnectUnix(path, unix.SOCK_STREAM)
		fd = s
		return Conn{}, err
	})
	return fd, c, err
}

// dial tries the candidate sockets for req.Name in order with connect,
// and says what connect's errors mean.
func (u *Unix) dial(req Request, connect func(path string) (Conn, error)) (Conn, error) {
	for _, cand := range hostname.Candidates(req.Name) {
		path := filepath.Join(u.Dir, cand)
		if u.isSeqpacket(path) {
			return Conn{Backend: path, Name: cand, Handoff: true}, nil
		}
		c, err := connect(path)
		if err == nil {
			c.Backend, c.Name = path, cand
			return c, nil
		}
		switch {
		case errors.Is(err, syscall.EPROTOTYPE):
			u.rememberSeqpacket(path)
			return Conn{Backend: path, Name: cand, Handoff: true}, nil
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
			continue
		case errors.Is(err, syscall.ECONNREFUSED):
			return Conn{}, fmt.Errorf("%w: %s: nobody accepts on the socket (stale?): %v", ErrRefused, path, syscall.ECONNREFUSED)
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return Conn{}, fmt.Errorf("%w: %s: permission denied", ErrRefused, path)
		case errors.Is(err, syscall.EAGAIN):
			return Conn{}, fmt.Errorf("%w: %s: backlog full", ErrRefused, path)
		default:
			return Conn{}, fmt.Errorf("%w: %s: %w", ErrRefused, path, err)
		}
	}
	return Conn{}, fmt.Errorf("%w: no socket %s", ErrUnknownName, filepath.Join(u.Dir, req.Name))
}
