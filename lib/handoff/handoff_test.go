package handoff

import (
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []Message{
		{SNI: "example.com"},
		{SNI: ""},
		{SNI: "a.example", Client: netip.MustParseAddrPort("192.0.2.33:40000")},
		{SNI: "b.example", Client: netip.MustParseAddrPort("[2001:db8::7]:443")},
	} {
		b, err := m.marshal()
		if err != nil {
			t.Fatal(err)
		}
		got, err := unmarshal(b)
		if err != nil || got != m {
			t.Errorf("round trip of %+v: %+v, %v", m, got, err)
		}
		// Bytes appended by a later version are ignored.
		if got, err := unmarshal(append(b, 9, 9, 9)); err != nil || got != m {
			t.Errorf("with trailing bytes: %+v, %v", got, err)
		}
	}
	for _, bad := range [][]byte{nil, {1}, {2, 0, 0, 0, 0}, {1, 0, 0, 5, 'a'}, {1, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7}, {1, 0, 0, 0, 6, 1}} {
		if _, err := unmarshal(bad); err == nil {
			t.Errorf("unmarshal(%v) accepted", bad)
		}
	}
}

// TestHandOff passes a live TCP connection with unread bytes in it from one
// listener to another and checks that the receiver reads every byte and
// sees the real peer.
func TestHandOff(t *testing.T) {
	dir, _ := os.MkdirTemp("/tmp", "handoff-")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "example.test")
	hl, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	if _, err := Listen(path); err == nil {
		t.Fatal("Listen over a live socket succeeded")
	}

	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	client, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.Write([]byte("hello, still unread"))
	accepted, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := SendMessage(path, accepted.(*net.TCPConn), Message{SNI: "example.test"}); err != nil {
		t.Fatal(err)
	}
	accepted.Close() // the sender forgets the connection

	got, err := hl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if sni, ok := SNI(got); !ok || sni != "example.test" {
		t.Errorf("SNI = %q, %v", sni, ok)
	}
	if got.RemoteAddr().String() != client.LocalAddr().String() {
		t.Errorf("RemoteAddr = %v, want the client %v", got.RemoteAddr(), client.LocalAddr())
	}
	got.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 19)
	if _, err := io.ReadFull(got, buf); err != nil || string(buf) != "hello, still unread" {
		t.Fatalf("read %q, %v", buf, err)
	}
	got.Write([]byte("reply"))
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply := make([]byte, 5)
	if _, err := io.ReadFull(client, reply); err != nil || string(reply) != "reply" {
		t.Fatalf("client read %q, %v", reply, err)
	}
}

// TestAnnouncedClient: a trusted sender (this process, same uid) may
// announce the client address from a PROXY header.
func TestAnnouncedClient(t *testing.T) {
	dir, _ := os.MkdirTemp("/tmp", "handoff-")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s")
	hl, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	tl, _ := net.Listen("tcp", "127.0.0.1:0")
	defer tl.Close()
	client, _ := net.Dial("tcp", tl.Addr().String())
	defer client.Close()
	accepted, _ := tl.Accept()
	announced := netip.MustParseAddrPort("192.0.2.9:1234")
	if err := SendMessage(path, accepted.(*net.TCPConn), Message{SNI: "s", Client: announced}); err != nil {
		t.Fatal(err)
	}
	accepted.Close()
	got, err := hl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if got.RemoteAddr().String() != announced.String() {
		t.Errorf("RemoteAddr = %v, want %v", got.RemoteAddr(), announced)
	}
}

// TestDropsMalformed: a message without a descriptor is dropped and the
// listener goes on to the next one.
func TestDropsMalformed(t *testing.T) {
	dir, _ := os.MkdirTemp("/tmp", "handoff-")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s")
	hl, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	bad, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	bad.Write([]byte{1, 0, 0, 0, 0}) // well formed, but no descriptor
	bad.Close()

	tl, _ := net.Listen("tcp", "127.0.0.1:0")
	defer tl.Close()
	client, _ := net.Dial("tcp", tl.Addr().String())
	defer client.Close()
	accepted, _ := tl.Accept()
	if err := Send(path, accepted.(*net.TCPConn), "good"); err != nil {
		t.Fatal(err)
	}
	accepted.Close()
	got, err := hl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if sni, _ := SNI(got); sni != "good" {
		t.Errorf("got %q, want the good message after the bad one", sni)
	}
}
