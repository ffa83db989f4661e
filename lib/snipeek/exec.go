package snipeek

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/logging"
	"golang.org/x/sys/unix"
)

// Environment variables set for the program that snipeek executes.
const (
	EnvSNI  = "TLS_SNI"  // canonical server name
	EnvALPN = "TLS_ALPN" // offered ALPN protocols, comma-separated
)

// ErrNotSocket is returned by CheckSocket for a descriptor that is not a
// connected stream socket.
var ErrNotSocket = errors.New("not a connected stream socket")

// CheckSocket returns nil if fd is a connected stream socket (TCP, or a
// UNIX stream socket), as inetd and systemd's Accept=yes pass, and an error
// wrapping ErrNotSocket otherwise. A listening socket (Accept=no) is not
// connected and is refused.
func CheckSocket(fd int) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("fd %d: %w: %w", fd, ErrNotSocket, err)
	}
	if typ != unix.SOCK_STREAM {
		return fmt.Errorf("fd %d: %w: socket type %d", fd, ErrNotSocket, typ)
	}
	if _, err := unix.Getpeername(fd); err != nil {
		return fmt.Errorf("fd %d: %w: %w (a listening socket? use Accept=yes or --accept)", fd, ErrNotSocket, err)
	}
	return nil
}

// listenFDsStart is the first descriptor passed by socket activation
// (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// FindConn returns the descriptor of the connection the process was started
// on. That is standard input when it is a connected stream socket (inetd,
// systemd's StandardInput=socket, systemd-socket-activate --inetd), else
// descriptor 3 when the systemd socket activation protocol passes exactly
// one connected socket to this process (LISTEN_PID, LISTEN_FDS=1: a socket
// unit with Accept=yes, systemd-socket-activate --accept). The error says
// why neither is usable.
func FindConn() (int, error) {
	stdinErr := CheckSocket(0)
	if stdinErr == nil {
		return 0, nil
	}
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || pid != strconv.Itoa(os.Getpid()) {
		return -1, fmt.Errorf("standard input: %w", stdinErr)
	}
	if fds != "1" {
		return -1, fmt.Errorf("LISTEN_FDS=%s: %w: want the one connection of Accept=yes", fds, ErrNotSocket)
	}
	if err := CheckSocket(listenFDsStart); err != nil {
		return -1, fmt.Errorf("LISTEN_FDS: %w", err)
	}
	return listenFDsStart, nil
}

// AsStdio gives the connection on fd to the program about to be executed
// the way inetd does: as its standard input and standard output. A
// connection passed by socket activation (fd 3) is moved there and the
// LISTEN_* variables, which would describe a descriptor that is no longer
// open, are removed from env. A connection that already is standard input
// is left alone, as is standard output.
func AsStdio(fd int, env []string) ([]string, error) {
	if fd == 0 {
		return env, nil
	}
	for _, to := range []int{0, 1} {
		if err := unix.Dup2(fd, to); err != nil {
			return nil, fmt.Errorf("move connection from fd %d to %d: %w", fd, to, err)
		}
	}
	unix.Close(fd)
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "LISTEN_PID=") && !strings.HasPrefix(kv, "LISTEN_FDS=") && !strings.HasPrefix(kv, "LISTEN_FDNAMES=") {
			out = append(out, kv)
		}
	}
	return out, nil
}

// Config says how PeekFD waits and decides.
type Config struct {
	// Timeout bounds the wait for a whole ClientHello; 0 waits forever.
	Timeout time.Duration
	// DefaultHostname is the canonical name used for a hello without a
	// server name; "" refuses such hellos.
	DefaultHostname string
	// Limit is the largest hello accepted (clienthello.DefaultLimit if 0).
	Limit int
	// Log gets one line per refused connection; nil logs nothing.
	Log *slog.Logger
}

// Decision is what a served connection's program learns about it.
type Decision struct {
	// Name is the canonical server name (or the default host name).
	Name string
	// ALPN lists the offered protocols that are safe to pass on in the
	// environment (see Environ).
	ALPN []string
}

// Refusal is the error PeekFD returns for a connection it does not serve:
// why, and which TLS alert (if any) the client was sent.
type Refusal struct {
	Reason string            // the outcome, as snilisten logs it: "no_sni", "invalid_name", "peek_timeout", ... (clienthello.Outcome*)
	Alert  clienthello.Alert // 0 if none was sent
	SNI    string            // the server name as sent, if any
	Err    error             // the underlying error
}

// Error returns the reason and the underlying error.
func (r *Refusal) Error() string {
	if r.Err == nil {
		return r.Reason
	}
	return r.Reason + ": " + r.Err.Error()
}

// Unwrap returns the underlying error, so that errors.Is sees
// os.ErrDeadlineExceeded, clienthello.ErrMalformed and the like.
func (r *Refusal) Unwrap() error { return r.Err }

// PeekFD peeks at the ClientHello on the connected socket fd without
// consuming it and decides whether and how to serve it. It leaves fd as a
// program started on it expects to find it: open, with every byte unread,
// in blocking mode. A connection it does not serve gets a TLS alert where
// the client spoke TLS, and a *Refusal error (logged as one line).
func PeekFD(fd int, cfg Config) (Decision, error) {
	if cfg.Limit == 0 {
		cfg.Limit = clienthello.DefaultLimit
	}
	c, err := fileConn(fd)
	if err != nil {
		return Decision{}, err
	}
	// net.FileConn worked on a duplicate of fd, which shares fd's open file
	// description and so made fd non-blocking too: a program that reads
	// standard input with plain read(2) would get EAGAIN. Undo it.
	defer unix.SetNonblock(fd, false)
	defer c.Close()

	if cfg.Timeout > 0 {
		c.SetReadDeadline(time.Now().Add(cfg.Timeout))
	}
	info, buf, err := clienthello.Peek(c.(syscall.Conn), nil, cfg.Limit)
	d, ref := decide(&info, err, cfg.DefaultHostname)
	if ref == nil {
		return d, nil
	}
	clienthello.Refuse(c, len(buf), ref.Alert)
	if cfg.Log != nil {
		attrs := []any{"client", logging.Addr(c.RemoteAddr()), "reason", ref.Reason}
		if ref.SNI != "" {
			attrs = append(attrs, "sni", logging.Truncate(ref.SNI, 255))
		}
		if ref.Alert != 0 {
			attrs = append(attrs, "alert", ref.Alert.String())
		}
		if ref.Err != nil {
			attrs = append(attrs, "error", ref.Err.Error())
		}
		cfg.Log.Warn("refused", attrs...)
	}
	return Decision{}, ref
}

// fileConn returns a net.Conn on a duplicate of fd, leaving fd open.
func fileConn(fd int) (net.Conn, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate fd %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(dup), "client")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("socket on fd %d: %w", fd, err)
	}
	if _, ok := c.(syscall.Conn); !ok {
		c.Close()
		return nil, fmt.Errorf("socket on fd %d: %T cannot be peeked", fd, c)
	}
	return c, nil
}

// decide maps the result of a peek to the decision, or to the refusal and
// the alert that tells a TLS client why: the same mapping as snilisten's
// (clienthello.PeekVerdict and clienthello.Route).
func decide(info *clienthello.Info, err error, defaultHost string) (Decision, *Refusal) {
	if err != nil {
		v := clienthello.PeekVerdict(err)
		return Decision{}, &Refusal{Reason: v.Outcome, Alert: v.Alert, Err: err}
	}
	name, v, err := clienthello.Route(info, defaultHost)
	if err != nil {
		return Decision{}, &Refusal{Reason: v.Outcome, Alert: v.Alert, SNI: info.ServerName(), Err: err}
	}
	return Decision{Name: name, ALPN: safeProtocols(info.ALPN())}, nil
}

// safeProtocols keeps the protocols that can be passed in a comma-separated
// environment variable and read by a shell script: printable ASCII
// without spaces, commas or double quotes. ALPN protocol names are
// arbitrary bytes; a NUL would make exec fail, a comma would forge a
// second entry.
func safeProtocols(protos []string) []string {
	var safe []string
	for _, p := range protos {
		if !strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r > '~' || r == ',' || r == '"' }) {
			safe = append(safe, p)
		}
	}
	return safe
}

// Environ returns env with TLS_SNI and TLS_ALPN set to what d says,
// replacing any inherited values so that a program can trust them.
func Environ(env []string, d Decision) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if !strings.HasPrefix(kv, EnvSNI+"=") && !strings.HasPrefix(kv, EnvALPN+"=") {
			out = append(out, kv)
		}
	}
	return append(out, EnvSNI+"="+d.Name, EnvALPN+"="+strings.Join(d.ALPN, ","))
}

// Exec replaces the running process with the program at path (as found by
// exec.LookPath), with argv args and environment env. It returns only on
// failure.
func Exec(path string, args, env []string) error {
	if err := syscall.Exec(path, args, env); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}

// LookPath finds program in PATH, as the shell would.
func LookPath(program string) (string, error) {
	p, err := exec.LookPath(program)
	if err != nil {
		return "", fmt.Errorf("find program: %w", err)
	}
	return p, nil
}
