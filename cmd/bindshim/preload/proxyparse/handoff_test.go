//go:build cgo

package proxyparse

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/handoff"
	"golang.org/x/sys/unix"
)

// tcpPair returns the server side of a loopback TCP connection, whose
// descriptor the tests send, and the client side.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}

// socketDir is a short directory for UNIX sockets.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "hop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// captured returns the payloads lib/handoff writes for msgs, read off a
// plain SOCK_SEQPACKET socket.
func captured(t *testing.T, msgs []handoff.Message) [][]byte {
	t.Helper()
	path := filepath.Join(socketDir(t), "capture")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tc, _ := tcpPair(t)
	var out [][]byte
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
	for _, m := range msgs {
		if err := handoff.SendMessage(path, tc, m); err != nil {
			t.Fatalf("send %+v: %v", m, err)
		}
		c, err := ln.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if cm, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range cm {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
		out = append(out, bytes.Clone(buf[:n]))
	}
	return out
}

func randomMessage(r *rand.Rand) handoff.Message {
	var m handoff.Message
	name := make([]byte, r.IntN(256))
	for i := range name {
		name[i] = byte('a' + r.IntN(26))
	}
	m.SNI = string(name)
	switch r.IntN(4) {
	case 1:
		m.Client = netip.AddrPortFrom(randAddr(r, true), uint16(r.IntN(65536)))
	case 2, 3:
		m.Client = netip.AddrPortFrom(randAddr(r, false), uint16(r.IntN(65536)))
	}
	return m
}

// TestHandoffWritten: every message lib/handoff writes reads back the same
// in C (an IPv4 client, v4-mapped or not, as IPv4: lib/handoff writes it
// in 4 bytes).
func TestHandoffWritten(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 1))
	msgs := []handoff.Message{
		{},
		{SNI: "www.example.test"},
		{SNI: "a.test", Client: netip.MustParseAddrPort("203.0.113.7:40000")},
		{SNI: "a.test", Client: netip.MustParseAddrPort("[::ffff:203.0.113.7]:1")},
		{SNI: "a.test", Client: netip.MustParseAddrPort("[2001:db8::7]:443")},
	}
	for range 200 {
		msgs = append(msgs, randomMessage(r))
	}
	for i, b := range captured(t, msgs) {
		want := msgs[i]
		if want.Client.IsValid() {
			want.Client = netip.AddrPortFrom(want.Client.Addr().Unmap(), want.Client.Port())
		}
		got, ok := ParseHandoff(b)
		if !ok || got.SNI != want.SNI || got.Client != want.Client {
			t.Errorf("%x: C read %+v, %v; want %+v", b, got, ok, want)
		}
	}
}

func TestHandoffCases(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"", false},
		{"\x01\x00\x00\x00", false},
		{"\x01\x00\x00\x00\x00", true},
		{"\x02\x00\x00\x00\x00", false},
		{"\x00\x00\x00\x00\x00", false},
		{"\x01\xff\x00\x00\x00", true}, // flags are ignored
		{"\x01\x00\x00\x01a\x00", true},
		{"\x01\x00\x00\x02a\x00", false},
		{"\x01\x00\x00\x01a", false},
		{"\x01\x00\x00\x00\x06\xcb\x00\x71\x07\x01\xbb", true},
		{"\x01\x00\x00\x00\x06\xcb\x00\x71\x07\x01", false},
		{"\x01\x00\x00\x00\x05\xcb\x00\x71\x07\x01", false},
		{"\x01\x00\x00\x00\x04\xcb\x00\x71\x07", false},
		{"\x01\x00\x00\x00\x12" + string(make([]byte, 18)), true},
		{"\x01\x00\x00\x00\x12" + string(make([]byte, 17)), false},
		{"\x01\x00\x00\x00\x06\xcb\x00\x71\x07\x01\xbbtrailing bytes of a later version", true},
		{"\x01\x00\xff\xff" + string(make([]byte, 1000)), false},
	} {
		if _, ok := ParseHandoff([]byte(c.in)); ok != c.ok {
			t.Errorf("%q: ok=%v, want %v", c.in, ok, c.ok)
		}
	}
	m, ok := ParseHandoff([]byte("\x01\x00\x00\x06a.test\x06\xcb\x00\x71\x07\x01\xbb"))
	if !ok || m.SNI != "a.test" || m.Client != netip.MustParseAddrPort("203.0.113.7:443") {
		t.Errorf("a.test from 203.0.113.7:443: %+v, %v", m, ok)
	}
}

// TestHandoffAgreesWithGo sends valid, damaged and random messages to a
// lib/handoff listener, each followed by a good one: the listener returns
// the first connection exactly when the C parser accepts its message, and
// reads the same name and client from it.
func TestHandoffAgreesWithGo(t *testing.T) {
	path := filepath.Join(socketDir(t), "listener")
	ln, err := handoff.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	candidate, _ := tcpPair(t)
	good, _ := tcpPair(t)
	goodMsg := captured(t, []handoff.Message{{SNI: "good.test"}})[0]
	send := func(c *net.TCPConn, b []byte) {
		t.Helper()
		s, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		f, err := c.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, _, err := s.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil); err != nil {
			t.Fatal(err)
		}
	}

	r := rand.New(rand.NewPCG(6, 2))
	var inputs [][]byte
	var msgs []handoff.Message
	for range 300 {
		msgs = append(msgs, randomMessage(r))
	}
	for _, b := range captured(t, msgs) {
		inputs = append(inputs, b, mutateHandoff(r, b), mutateHandoff(r, b))
	}
	for range 200 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(4)) // small bytes: plausible versions and lengths
		}
		inputs = append(inputs, b)
	}
	accepted := 0
	for _, in := range inputs {
		send(candidate, in)
		send(good, goodMsg)
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		hc := c.(*handoff.Conn)
		goOK := hc.LocalAddr().String() == candidate.LocalAddr().String()
		cm, cOK := ParseHandoff(in[:min(len(in), HandoffMax)])
		if goOK != cOK {
			t.Errorf("%x: lib/handoff accepts %v, C %v", in, goOK, cOK)
		}
		if goOK {
			accepted++
			remote := candidate.RemoteAddr().(*net.TCPAddr).AddrPort()
			if cm.Client.IsValid() {
				remote = cm.Client
			}
			if hc.SNI() != cm.SNI || hc.RemoteAddr().(*net.TCPAddr).AddrPort() != remote {
				t.Errorf("%x: lib/handoff reads %q from %v, C %+v", in, hc.SNI(), hc.RemoteAddr(), cm)
			}
			c.Close()
			if c, err = ln.Accept(); err != nil { // the good one
				t.Fatal(err)
			}
		}
		c.Close()
	}
	if accepted < len(inputs)/4 || accepted > len(inputs)*3/4 {
		t.Errorf("%d of %d inputs accepted: the test says little", accepted, len(inputs))
	}
}

// mutateHandoff damages a message: a flipped bit, a cut, bytes added, or
// a length field changed.
func mutateHandoff(r *rand.Rand, b []byte) []byte {
	b = bytes.Clone(b)
	switch r.IntN(5) {
	case 0:
		i := r.IntN(len(b))
		b[i] ^= byte(1 << r.IntN(8))
	case 1:
		b = b[:r.IntN(len(b))]
	case 2:
		b = append(b, make([]byte, r.IntN(20))...)
	case 3:
		b[2], b[3] = 0, byte(r.IntN(256))
	case 4:
		n := int(b[2])<<8 | int(b[3])
		b[4+n] = []byte{0, 4, 6, 16, 18, 19}[r.IntN(6)]
	}
	return b
}
