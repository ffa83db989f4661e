// Package listener opens the sockets a daemon serves from the specs an
// operator writes on its command line, or takes them from systemd socket
// activation, and tells systemd how the daemon is doing (sd_notify).
//
// Specs:
//
//	tcp:PORT          every address of both families on PORT
//	tcp:ADDR:PORT     one address; IPv6 in brackets: tcp:[2001:db8::1]:443
//	unix:PATH         a UNIX stream socket at PATH (a stale one is replaced)
//	udp:PORT          UDP (QUIC) on every address of both families on PORT
//	udp:ADDR:PORT     UDP on one address
//	fd:NAME           the inherited sockets systemd named NAME (FileDescriptorName=):
//	                  stream (ListenStream=) and datagram (ListenDatagram=) alike
//
// Open returns stream listeners only; OpenAll returns the UDP sockets too,
// for a daemon that serves QUIC.
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

// Sockets are what a daemon serves from: stream listeners (TCP, UNIX)
// and UDP sockets.
type Sockets struct {
	Streams   []net.Listener
	Datagrams []*net.UDPConn
}

// Close closes every socket.
func (s Sockets) Close() {
	closeAll(s.Streams)
	for _, d := range s.Datagrams {
		d.Close()
	}
}

// Open returns one listener per spec, for a daemon that serves streams
// only: a udp: spec, or an inherited UDP socket, is an error. With no
// specs it returns every socket inherited through systemd socket
// activation. Inherited sockets that no spec names are closed. On error,
// every listener opened so far is closed.
func Open(specs []string) ([]net.Listener, error) {
	s, err := OpenAll(specs)
	if err != nil {
		return nil, err
	}
	if len(s.Datagrams) > 0 {
		s.Close()
		return nil, fmt.Errorf("listen: UDP socket %s: this command serves streams only", s.Datagrams[0].LocalAddr())
	}
	return s.Streams, nil
}

// OpenAll is Open for a daemon that serves UDP as well: it returns the
// stream listeners and the UDP sockets of the specs, or with no specs
// every inherited socket of either kind.
func OpenAll(specs []string) (Sockets, error) {
	inherited, err := inheritedByName()
	if err != nil {
		return Sockets{}, err
	}
	var out Sockets
	fail := func(err error) (Sockets, error) {
		out.Close()
		for _, s := range inherited {
			s.Close()
		}
		return Sockets{}, err
	}
	if len(specs) == 0 {
		for _, s := range inherited {
			out.Streams = append(out.Streams, s.Streams...)
			out.Datagrams = append(out.Datagrams, s.Datagrams...)
		}
		if len(out.Streams)+len(out.Datagrams) == 0 {
			return Sockets{}, ErrNoListeners
		}
		return out, nil
	}
	for _, spec := range specs {
		if name, ok := strings.CutPrefix(spec, "fd:"); ok {
			s, found := inherited[name]
			if !found {
				return fail(fmt.Errorf("listen %q: no inherited socket named %q (LISTEN_FDNAMES)", spec, name))
			}
			out.Streams = append(out.Streams, s.Streams...)
			out.Datagrams = append(out.Datagrams, s.Datagrams...)
			delete(inherited, name)
			continue
		}
		if rest, ok := strings.CutPrefix(spec, "udp:"); ok {
			pc, err := listenUDP(spec, rest)
			if err != nil {
				return fail(err)
			}
			out.Datagrams = append(out.Datagrams, pc)
			continue
		}
		l, err := listen(spec)
		if err != nil {
			return fail(err)
		}
		out.Streams = append(out.Streams, l)
	}
	for _, s := range inherited {
		s.Close()
	}
	return out, nil
}

// CheckSpec reports whether spec is well formed, without opening anything:
// for usage errors at flag-parsing time.
func CheckSpec(spec string) error {
	kind, rest, _ := strings.Cut(spec, ":")
	switch kind {
	case "tcp", "udp":
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
	return fmt.Errorf("listen spec %q: want tcp:PORT, tcp:ADDR:PORT, udp:PORT, udp:ADDR:PORT, unix:PATH or fd:NAME", spec)
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

// listenUDP opens the UDP socket of a udp: spec, rest being what follows
// "udp:".
func listenUDP(spec, rest string) (*net.UDPConn, error) {
	if err := CheckSpec(spec); err != nil {
		return nil, err
	}
	addr, _ := tcpAddress(rest)
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", spec, err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", spec, err)
	}
	return pc, nil
}

// tcpAddress turns "PORT" or "ADDR:PORT" into a net.Listen address (TCP
// or UDP).
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
// Each is a listening stream socket or a UDP socket; anything else is an
// error.
func inheritedByName() (map[string]Sockets, error) {
	files := activation.Files(true)
	byName := make(map[string]Sockets, len(files))
	fail := func(err error) (map[string]Sockets, error) {
		for _, s := range byName {
			s.Close()
		}
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	for i, f := range files {
		files[i] = nil
		s := byName[f.Name()]
		if l, err := net.FileListener(f); err == nil {
			s.Streams = append(s.Streams, l)
		} else if pc, perr := net.FilePacketConn(f); perr == nil {
			udp, ok := pc.(*net.UDPConn)
			if !ok {
				pc.Close()
				f.Close()
				return fail(fmt.Errorf("inherited socket %q: a datagram socket that is not UDP (%s)", f.Name(), pc.LocalAddr().Network()))
			}
			s.Datagrams = append(s.Datagrams, udp)
		} else {
			f.Close()
			return fail(fmt.Errorf("inherited socket %q: neither a listening stream socket nor a UDP socket: %w", f.Name(), err))
		}
		f.Close()
		byName[f.Name()] = s
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
