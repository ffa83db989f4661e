package tests

// Senders for handoff sockets (SOCK_SEQPACKET, lib/handoff) that play
// snilisten's part without it: a message for a name, a loopback TCP
// connection to hand over, and a TLS request over the handed-off
// connection.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/handoff"
)

// hoMessage is a valid handoff message (version 1) for name, without a
// client address.
func hoMessage(name string) []byte {
	return append(append([]byte{1, 0, 0, byte(len(name))}, name...), 0)
}

// hoPair makes a loopback TCP connection from the address local and
// returns both ends: the server end is what a sender hands off.
func hoPair(t testing.TB, local string) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s
}

// hoCarry makes a connection from local and returns its client end, and
// the descriptor fd of its server end in blocking or non-blocking mode,
// held by f: the only copy left, so whoever receives it owns the server
// end. (f.Fd() would put the socket back in blocking mode: use fd.)
func hoCarry(t testing.TB, local string, nonblock bool) (c *net.TCPConn, f *os.File, fd int) {
	t.Helper()
	c, s := hoPair(t, local)
	f, err := s.File()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	t.Cleanup(func() { f.Close() })
	fd = int(f.Fd())
	if err := syscall.SetNonblock(fd, nonblock); err != nil {
		t.Fatal(err)
	}
	return c, f, fd
}

// hoSend sends payload with the descriptors fds as one message to the
// handoff socket at path, as a sender of its own.
func hoSend(t testing.TB, path string, payload []byte, fds ...int) {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatalf("connect to %s: %v", path, err)
	}
	defer c.Close()
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(payload, oob, nil); err != nil {
		t.Fatalf("send to %s: %v", path, err)
	}
}

// hoClosed checks that the peer of c closed the connection (EOF or a
// reset, nothing else) within 10 s: nobody holds the other end any more.
func hoClosed(t testing.TB, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("%s: the handed-off connection read %d bytes, %v; want it closed", what, n, err)
	}
}

// hoGet hands a new connection from local straight to the handoff socket
// at path with message m (no snilisten), then speaks TLS with the name
// sni over it and makes one HTTP/1.0 request for /. It returns the body.
func hoGet(t testing.TB, path, local, sni string, m handoff.Message) (string, error) {
	t.Helper()
	c, s := hoPair(t, local)
	err := handoff.SendMessage(path, s, m)
	s.Close()
	if err != nil {
		return "", err
	}
	return tlsGet(t, c, sni)
}

// tlsGet makes one HTTP/1.0 request for / over TLS on c and returns the
// response body.
func tlsGet(t testing.TB, c net.Conn, sni string) (string, error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	tc := tls.Client(c, testPKI(t).ClientConfig(sni))
	if _, err := fmt.Fprintf(tc, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", sni); err != nil {
		return "", err
	}
	b, err := io.ReadAll(tc)
	if len(b) > 0 {
		err = nil
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return body, err
}
