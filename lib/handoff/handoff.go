// Package handoff passes an accepted TCP connection from one process to
// another over a UNIX SOCK_SEQPACKET socket (SCM_RIGHTS), with a small
// message saying what it is for. snilisten uses it to give a client's
// connection to a backend on the same machine instead of relaying it: the
// ClientHello, only peeked, is still unread in the socket; the backend
// owns a real TCP connection (getpeername is the client, no PROXY header
// needed), the kernel moves every byte with no proxy in the path, and
// restarting snilisten drops nothing.
//
// The message (version 1), one per connection, carries the descriptor as
// ancillary data and this payload:
//
//	offset  size  field
//	0       1     version, 1
//	1       1     flags, 0
//	2       2     length N of the server name, big endian
//	4       N     canonical server name (may be empty)
//	4+N     1     length M of the client address: 0, 6 or 18
//	5+N     M     client address (4 or 16 bytes) and port (2, big endian),
//	              when a trusted front told the sender who the client is
//
// Receivers ignore bytes after these fields, so later versions may append.
//
// It is the one package of the toolkit meant for other programs: a Go
// server calls Listen to receive connections from snilisten the way
// bindshim gives them to servers it cannot change. The rest of lib/ is
// the commands' own code, with no promise of a stable API.
package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snitools/snitools/lib/rawsys"
)

// Version is the message version this package writes.
const Version = 1

// maxMessage bounds a message: a 253-byte name and an address fit easily.
const maxMessage = 512

// Message is what travels with a connection.
type Message struct {
	// SNI is the canonical server name the client asked for.
	SNI string
	// Client, if valid, is the client's address as announced by a trusted
	// front (PROXY protocol), to be used instead of the socket's peer.
	Client netip.AddrPort
}

// ErrMessage is wrapped by errors about malformed messages.
var ErrMessage = errors.New("malformed handoff message")

func (m Message) marshal() ([]byte, error) {
	if len(m.SNI) > 255 {
		return nil, fmt.Errorf("handoff: server name of %d bytes", len(m.SNI))
	}
	b := make([]byte, 0, 4+len(m.SNI)+19)
	b = append(b, Version, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.SNI)))
	b = append(b, m.SNI...)
	switch {
	case !m.Client.IsValid():
		b = append(b, 0)
	case m.Client.Addr().Unmap().Is4():
		a := m.Client.Addr().Unmap().As4()
		b = append(b, 6)
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint16(b, m.Client.Port())
	default:
		a := m.Client.Addr().As16()
		b = append(b, 18)
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint16(b, m.Client.Port())
	}
	return b, nil
}

func unmarshal(b []byte) (Message, error) {
	var m Message
	if len(b) < 5 || b[0] != Version {
		return m, fmt.Errorf("%w: %d bytes, version %v", ErrMessage, len(b), b[:min(1, len(b))])
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if len(b) < 4+n+1 || n > 255 {
		return m, fmt.Errorf("%w: name of %d bytes in %d", ErrMessage, n, len(b))
	}
	m.SNI = string(b[4 : 4+n])
	rest := b[4+n:]
	switch l := int(rest[0]); {
	case l == 0:
	case (l == 6 || l == 18) && len(rest) >= 1+l:
		addr, _ := netip.AddrFromSlice(rest[1 : l-1])
		m.Client = netip.AddrPortFrom(addr, binary.BigEndian.Uint16(rest[l-1:l+1]))
	default:
		return m, fmt.Errorf("%w: client address of %d bytes", ErrMessage, l)
	}
	return m, nil
}

// Send passes c to the process listening on the SOCK_SEQPACKET socket at
// path, with the server name. c stays open in the caller, who should then
// close it: the receiver has its own descriptor for the same connection.
func Send(path string, c *net.TCPConn, sni string) error {
	return SendMessage(path, c, Message{SNI: sni})
}

// SendMessage is Send with a full message.
func SendMessage(path string, c *net.TCPConn, m Message) error {
	payload, err := m.marshal()
	if err != nil {
		return err
	}
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("handoff to %s: %w", path, err)
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("handoff to %s: %w", path, err)
	}
	var werr error
	if err := rc.Control(func(fd uintptr) {
		_, _, werr = conn.WriteMsgUnix(payload, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return fmt.Errorf("handoff to %s: %w", path, err)
	}
	if werr != nil {
		return fmt.Errorf("handoff to %s: send: %w", path, werr)
	}
	return nil
}

// SendFD is SendMessage for a socket descriptor outside the Go runtime,
// and without waiting: a receiver whose queue is full, or whose backlog
// is, gives an error wrapping syscall.EAGAIN, where SendMessage waits up
// to a second. fd stays open in the caller.
func SendFD(path string, fd int, m Message) error {
	payload, err := m.marshal()
	if err != nil {
		return err
	}
	s, err := rawsys.ConnectUnix(path, unix.SOCK_SEQPACKET)
	if err != nil {
		return fmt.Errorf("handoff to %s: connect: %w", path, err)
	}
	defer rawsys.Close(s)
	if err := rawsys.SendFD(s, payload, fd); err != nil {
		return fmt.Errorf("handoff to %s: send: %w", path, err)
	}
	return nil
}

// IsHandoffSocket reports whether err, from connecting to a UNIX socket as
// a stream, says the socket is a SOCK_SEQPACKET one: the convention for
// "pass the connection, do not relay".
func IsHandoffSocket(err error) bool { return errors.Is(err, syscall.EPROTOTYPE) }

// Conn is a connection received by a handoff Listener.
type Conn struct {
	*net.TCPConn
	sni    string
	remote net.Addr
}

// SNI returns the canonical server name the client asked for.
func (c *Conn) SNI() string { return c.sni }

// RemoteAddr returns the client's address: the socket's peer, or the
// address a trusted front announced, if the sender passed one on.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SNI returns the server name a connection was handed off for, looking
// through wrappers with a NetConn method such as *tls.Conn.
func SNI(c net.Conn) (string, bool) {
	for {
		switch v := c.(type) {
		case *Conn:
			return v.sni, true
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return "", false
		}
	}
}

// Listener receives connections handed off to a SOCK_SEQPACKET socket.
type Listener struct {
	ln    *net.UnixListener
	trust map[uint32]bool
}

// Listen creates the SOCK_SEQPACKET socket at path and returns a listener
// whose Accept returns each connection handed to it. A stale socket file
// at path (nobody accepts on it) is replaced; a live one is an error.
// Connections are taken only from senders running as root, as the
// listener's own user or as one of trustUIDs: anyone else could hand over
// a TCP socket they made themselves, from an address of their choosing,
// and it would pass for a client; a message of theirs is dropped unread,
// whether it announces a client address or not.
func Listen(path string, trustUIDs ...uint32) (*Listener, error) {
	addr := &net.UnixAddr{Name: path, Net: "unixpacket"}
	ln, err := net.ListenUnix("unixpacket", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		if c, derr := net.DialUnix("unixpacket", nil, addr); derr == nil {
			c.Close()
			return nil, fmt.Errorf("handoff listen %s: a live socket is already there", path)
		}
		if fi, serr := os.Lstat(path); serr != nil || fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("handoff listen %s: exists and is not a socket", path)
		}
		os.Remove(path)
		ln, err = net.ListenUnix("unixpacket", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("handoff listen %s: %w", path, err)
	}
	trust := map[uint32]bool{0: true, uint32(os.Getuid()): true}
	for _, u := range trustUIDs {
		trust[u] = true
	}
	return &Listener{ln: ln, trust: trust}, nil
}

// Accept waits for the next connection handed off. Senders that are not
// trusted are closed before anything is read, so that neither they nor
// their silence delay the senders queued behind them; messages that are
// malformed or carry no TCP socket are dropped (their descriptors closed).
// Accept then goes on to the next.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		sender, err := l.ln.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if !l.trusted(sender) {
			sender.Close()
			continue
		}
		c, err := l.receive(sender)
		sender.Close()
		if err == nil {
			return c, nil
		}
	}
}

// receive reads one message from a trusted sender and adopts its
// descriptor.
func (l *Listener) receive(sender *net.UnixConn) (*Conn, error) {
	sender.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := sender.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	fds, err := receivedFDs(oob[:oobn])
	if err != nil {
		return nil, err
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "handoff")
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(files) != 1 {
		return nil, fmt.Errorf("%w: %d descriptors", ErrMessage, len(files))
	}
	m, err := unmarshal(buf[:n])
	if err != nil {
		return nil, err
	}
	fc, err := net.FileConn(files[0])
	if err != nil {
		return nil, fmt.Errorf("handoff: received descriptor: %w", err)
	}
	tc, ok := fc.(*net.TCPConn)
	if !ok {
		fc.Close()
		return nil, fmt.Errorf("%w: descriptor is a %T, not TCP", ErrMessage, fc)
	}
	c := &Conn{TCPConn: tc, sni: m.SNI, remote: tc.RemoteAddr()}
	if m.Client.IsValid() {
		c.remote = net.TCPAddrFromAddrPort(m.Client)
	}
	return c, nil
}

func (l *Listener) trusted(sender *net.UnixConn) bool {
	rc, err := sender.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	rc.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	return err == nil && cred != nil && l.trust[cred.Uid]
}

func receivedFDs(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %v", ErrMessage, err)
	}
	var fds []int
	for _, m := range msgs {
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, rights...)
	}
	return fds, nil
}

// Close stops listening and removes the socket file.
func (l *Listener) Close() error { return l.ln.Close() }

// Addr returns the socket's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }
