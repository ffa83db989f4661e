package dispatch

import (
	"net"
	"strings"
	"testing"
)

type closeCount struct{ n *int }

func (c closeCount) Close() error { *c.n++; return nil }

func rec(addr string) *record {
	ip, _, _ := net.SplitHostPort(addr)
	return &record{client: &net.TCPAddr{IP: net.ParseIP(ip), Port: 4433}}
}

// TestAdmissionPerClient: a client's share counts IPv4 addresses and
// IPv6 /64s, peeking and relayed connections alike, and frees with done.
func TestAdmissionPerClient(t *testing.T) {
	a := newAdmission(2)
	var held []*record
	for _, addr := range []string{"192.0.2.1:1", "192.0.2.1:2", "[2001:db8::1]:1", "[2001:db8::2]:1", "192.0.2.2:1"} {
		r := rec(addr)
		if err := a.admit(r, false); err != nil {
			t.Fatalf("admit %s: %v", addr, err)
		}
		held = append(held, r)
	}
	for _, addr := range []string{"192.0.2.1:3", "[::ffff:192.0.2.1]:4", "[2001:db8::ffff:1]:1"} {
		err := a.admit(rec(addr), false)
		if err == nil || !strings.Contains(err.Error(), "-max-conns-per-client") {
			t.Errorf("admit %s over its share: %v, want refused", addr, err)
		}
	}
	if err := a.admit(rec("[2001:db8:0:1::1]:1"), false); err != nil {
		t.Errorf("another /64: %v", err)
	}
	if err := a.admit(rec("192.0.2.1:5"), true); err != nil {
		t.Errorf("a trusted front is not counted: %v", err)
	}
	if err := a.admit(&record{client: &net.UnixAddr{Name: "@", Net: "unix"}}, false); err != nil {
		t.Errorf("a UNIX client is not counted: %v", err)
	}
	a.done(held[0], OutcomeOK, nil)
	if err := a.admit(rec("192.0.2.1:6"), false); err != nil {
		t.Errorf("after one ended: %v", err)
	}
	for _, r := range held[1:] {
		a.done(r, OutcomeOK, nil)
	}
	if n := a.clients[rec("192.0.2.2:1").adm.key]; len(a.clients) != 2 || n != 0 {
		t.Errorf("clients left: %v", a.clients)
	}
}

// TestAdmissionEvictsOldestPeeking: eviction takes connections in the
// order they began peeking, skips those that finished peeking (relayed or
// handed off), and an evicted connection ends "evicted" even if its hello
// arrived in the same moment.
func TestAdmissionEvictsOldestPeeking(t *testing.T) {
	a := newAdmission(0)
	closed := make([]int, 4)
	rs := make([]*record, 4)
	for i := range rs {
		rs[i] = rec("192.0.2.1:1")
		a.admit(rs[i], false)
		a.startPeek(rs[i], closeCount{&closed[i]})
	}
	// rs[0] got its hello and is relayed: never evicted.
	if a.endPeek(rs[0]) {
		t.Fatal("endPeek: evicted without an eviction")
	}
	if !a.evictOldest() {
		t.Fatal("nothing evicted")
	}
	if closed[0] != 0 || closed[1] != 1 {
		t.Fatalf("closed %v, want the oldest still peeking (1) closed", closed)
	}
	// rs[2] finishes its peek right after being evicted: it must not go on.
	a.evictOldest()
	if !a.endPeek(rs[2]) {
		t.Error("endPeek after eviction: not evicted")
	}
	if o, err := a.done(rs[1], OutcomeClientClosed, nil); o != OutcomeEvicted || err != errEvicted {
		t.Errorf("done of an evicted connection: %v %v", o, err)
	}
	if o, _ := a.done(rs[0], OutcomeOK, nil); o != OutcomeOK {
		t.Errorf("done of a relayed connection: %v", o)
	}
	a.done(rs[2], OutcomeEvicted, errEvicted)
	a.done(rs[3], OutcomePeekTimeout, nil)
	if a.evictOldest() {
		t.Error("evicted with nothing peeking")
	}
	if a.peeking != 0 || a.oldest != nil || a.newest != nil || len(a.clients) != 0 {
		t.Errorf("left over: %d peeking, %v, %v, %v", a.peeking, a.oldest, a.newest, a.clients)
	}
	if closed[3] != 0 || closed[0] != 0 {
		t.Errorf("closed %v", closed)
	}
}
