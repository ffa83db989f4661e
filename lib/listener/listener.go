// Package listener opens the sockets a daemon serves from the specs an
// operator writes on its command line, or takes them from systemd socket
// activation, and tells systemd how the daemon is doing (sd_notify).
//
// Specs:
//
//	tcp:PORT          every address of both families on PORT
//	tcp:ADDR:PORT     one address; IPv6 in brackets: tcp:[2001:db8::1]:443
//	unix:PATH         a UNIX stream socket at PATH (a stale one is replaced)
//	fd:NAME           the inherited socket systemd named NAME (FileDescriptorName=)
package listener

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// ErrNoListeners is returned by Open when there are neither specs nor
// inherited sockets.
var ErrNoListeners = errors.New("nothing to listen on: give -listen or start under systemd socket activation")

// Open returns one listener per spec. With no specs it returns every socket
// inherited through systemd socket activation. Inherited sockets that no
// spec names are closed. On error, every listener opened so far is closed.
func Open(specs []string) ([]net.Listener, error) {
	inherited, err := inheritedByName()
	if err != nil {
		return nil, err
	}
	var lns []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		closeAll(lns)
		for _, l := range inherited {
			closeAll(l)
		}
		return nil, err
	}
	if len(specs) == 0 {
		for _, l := range inherited {
			lns = append(lns, l...)
		}
		if len(lns) == 0 {
			return nil, ErrNoListeners
		}
		return lns, nil
	}
	for _, spec := range specs {
		if name, ok := strings.CutPrefix(spec, "fd:"); ok {
			l, found := inherited[name]
			if !found {
				return fail(fmt.Errorf("listen %q: no inherited socket named %q (LISTEN_FDNAMES)", spec, name))
			}
			lns = append(lns, l...)
			delete(inherited, name)
			continue
		}
		l, err := listen(spec)
		if err != nil {
			return fail(err)
		}
		lns = append(lns, l)
	}
	for _, l := range inherited {
		closeAll(l)
	}
	return lns, nil
}

// CheckSpec reports whether spec is well formed, without opening anything:
// for usage errors at flag-parsing time.
func CheckSpec(spec string) error {
	kind, rest, _ := strings.Cut(spec, ":")
	switch kind {
	case "tcp":
		_, err := tcpAddress(rest)
		if err != nil {
			return fmt.Errorf("listen spec %q: %w", spec, err)
		}
		return nil
	case "unix", "fd":
		if rest == "" {
			return fmt.Errorf("listen spec %q: empty %s", spec, map[string]string{"unix": "path", "fd": "name"}[kind])
		}
		return nil
	}
	return fmt.Errorf("listen spec %q: want tcp:PORT, tcp:ADDR:PORT, unix:PATH or fd:NAME", spec)
}

func listen(spec string) (net.Listener, error) {
	if err := CheckSpec(spec); err != nil {
		return nil, err
	}
	kind, rest, _ := strings.Cut(spec, ":")
	if kind == "unix" {
		return listenUnix(rest)
	}
	addr, _ := tcpAddress(rest)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", spec, err)
	}
	return l, nil
}

// tcpAddress turns "PORT" or "ADDR:PORT" into a net.Listen address.
func tcpAddress(s string) (string, error) {
	host, port := "", s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if net.ParseIP(host) == nil {
			return "", fmt.Errorf("address %q is not an IP address", host)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return net.JoinHostPort(host, port), nil
}

// listenUnix listens on a UNIX stream socket, replacing a stale socket file
// (one nobody accepts on) but never a live socket or another kind of file.
func listenUnix(path string) (net.Listener, error) {
	l, err := net.Listen("unix", path)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		if err != nil {
			return nil, fmt.Errorf("listen unix:%s: %w", path, err)
		}
		return l, nil
	}
	if fi, serr := os.Lstat(path); serr != nil || fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("listen unix:%s: exists and is not a socket", path)
	}
	if c, derr := net.Dial("unix", path); derr == nil {
		c.Close()
		return nil, fmt.Errorf("listen unix:%s: a live socket is already there", path)
	}
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("listen unix:%s: remove stale socket: %w", path, err)
	}
	l, err = net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	return l, nil
}

// inheritedByName takes the sockets passed by systemd (LISTEN_FDS,
// LISTEN_PID, LISTEN_FDNAMES), unsetting those variables so that children do
// not inherit them. Unnamed sockets are named "LISTEN_FD_<n>" by go-systemd.
func inheritedByName() (map[string][]net.Listener, error) {
	files := activation.Files(true)
	byName := make(map[string][]net.Listener, len(files))
	for _, f := range files {
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, ls := range byName {
				closeAll(ls)
			}
			return nil, fmt.Errorf("inherited socket %q: not a listening stream socket: %w", f.Name(), err)
		}
		byName[f.Name()] = append(byName[f.Name()], l)
	}
	return byName, nil
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}

// Notify sends state (such as "READY=1" or "STOPPING=1") to systemd's
// notification socket. It does nothing when NOTIFY_SOCKET is unset.
func Notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}
