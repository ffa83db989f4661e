package listener

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"
)

// Specs is a repeatable -listen flag: each value is checked with CheckSpec
// when the flag is parsed, so a bad spec is a usage error naming it.
type Specs []string

// String implements flag.Value.
func (s *Specs) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value.
func (s *Specs) Set(spec string) error {
	if err := CheckSpec(spec); err != nil {
		return err
	}
	*s = append(*s, spec)
	return nil
}

// Temporary reports whether an accept error is worth retrying: running out
// of descriptors or memory, or a connection that went away in the queue.
func Temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Backoff paces an accept loop through temporary errors: it sleeps 5 ms,
// doubling up to a second while errors continue, and logs at most every
// ten seconds, so that running out of descriptors neither spins the CPU nor
// floods the log, and service resumes by itself when the pressure ends.
type Backoff struct {
	delay      time.Duration
	lastLogged time.Time
}

// Wait sleeps after err from ln.Accept if it is temporary, and reports
// whether it was (false: the loop should give up).
func (b *Backoff) Wait(ln net.Listener, err error, log *slog.Logger) bool {
	if !Temporary(err) {
		return false
	}
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	if time.Since(b.lastLogged) > 10*time.Second {
		log.Warn("accept failing, backing off", "listener", ln.Addr().String(), "error", err.Error(), "backoff", b.delay)
		b.lastLogged = time.Now()
	}
	time.Sleep(b.delay)
	return true
}

// Reset ends a run of errors.
func (b *Backoff) Reset() { b.delay = 0 }

// MaxConns is a default bound on concurrent connections that each hold
// perConn descriptors: what the open file limit leaves after a reserve for
// listeners and logs, at most most (0: no cap). Staying below the limit
// keeps excess clients waiting in the kernel's queue instead of failing
// accept. It returns 0 (no bound) if the limit is unknown or huge.
func MaxConns(perConn, most int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return most
	}
	n := max(int(lim.Cur)-64, 16) / perConn
	if most > 0 {
		n = min(n, most)
	}
	return n
}
