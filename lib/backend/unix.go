package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"syscall"

	"github.com/snitools/snitools/lib/hostname"
)

// Unix connects to the UNIX stream socket Dir/<name>, or, if there is none,
// to the wildcard Dir/_.<parent>. Names reach it canonical (lib/hostname),
// so a name is always a single path element inside Dir.
type Unix struct {
	Dir string
}

// Dial connects to the first candidate socket that exists. A socket that
// exists but refuses (left behind by a crashed server) or that may not be
// opened is an error wrapping ErrRefused, not a reason to fall through to
// the wildcard: the operator's intent for that exact name is clear.
func (u Unix) Dial(ctx context.Context, req Request) (Conn, error) {
	var d net.Dialer
	for _, cand := range hostname.Candidates(req.Name) {
		path := filepath.Join(u.Dir, cand)
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return Conn{Conn: c, Backend: path}, nil
		}
		switch {
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
			continue
		case errors.Is(err, syscall.ECONNREFUSED):
			return Conn{}, fmt.Errorf("%w: %s: nobody accepts on the socket (stale?): %v", ErrRefused, path, syscall.ECONNREFUSED)
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return Conn{}, fmt.Errorf("%w: %s: permission denied", ErrRefused, path)
		case errors.Is(err, syscall.EAGAIN):
			return Conn{}, fmt.Errorf("%w: %s: backlog full", ErrRefused, path)
		default:
			return Conn{}, fmt.Errorf("%w: %s: %v", ErrRefused, path, err)
		}
	}
	return Conn{}, fmt.Errorf("%w: no socket %s", ErrUnknownName, filepath.Join(u.Dir, req.Name))
}
