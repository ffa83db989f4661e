package backend

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/snitools/snitools/lib/rawsys"
)

// TestOutgoing: a TCP dialer's connection is in the set as the peer
// that the accepting side sees, from the moment the dial returns (before
// a byte is sent) until it is removed; a port counted twice needs two
// removals.
func TestOutgoing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	allow, err := ParseAllowList([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	out := &Outgoing{}
	d := TCP{Allow: allow, Port: ln.Addr().(*net.TCPAddr).Port, Outgoing: out}
	req := Request{Name: "127.0.0.1"}

	c, err := d.Dial(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if !out.ContainsAddr(peer.RemoteAddr()) || c.Local != peer.RemoteAddr().(*net.TCPAddr).AddrPort() {
		t.Errorf("Dial: accepted peer %s, set has it: %v, Conn.Local %s", peer.RemoteAddr(), out.ContainsAddr(peer.RemoteAddr()), c.Local)
	}
	c.Close()
	out.Remove(c.Local)

	fd, fc, err := d.DialFD(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer rawsys.Close(fd)
	peer2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer2.Close()
	if !out.ContainsAddr(peer2.RemoteAddr()) || out.Len() != 1 {
		t.Errorf("DialFD: accepted peer %s, set has it: %v, %d in the set", peer2.RemoteAddr(), out.ContainsAddr(peer2.RemoteAddr()), out.Len())
	}
	if out.ContainsAddr(peer.RemoteAddr()) {
		t.Errorf("removed connection %s still in the set", peer.RemoteAddr())
	}

	// Counted, and IPv4-mapped addresses are the same address.
	ap := fc.Local
	mapped := netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port())
	out.Add(mapped)
	out.Remove(ap)
	if !out.Contains(ap) {
		t.Errorf("%s left the set after one of its two removals", ap)
	}
	out.Remove(mapped)
	if out.Contains(ap) || out.Len() != 0 {
		t.Errorf("%s still in the set after both removals (%d left)", ap, out.Len())
	}
	var none *Outgoing
	none.Add(ap)
	if none.Contains(ap) {
		t.Error("a nil set contains something")
	}
}
