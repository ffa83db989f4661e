package peek

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// upTo returns an enough function that wants n bytes.
func upTo(n int) func([]byte) bool { return func(b []byte) bool { return len(b) >= n } }

func TestUntilLeavesBytesUnread(t *testing.T) {
	client, server := pair(t)
	go func() {
		client.Write([]byte("hel"))
		time.Sleep(20 * time.Millisecond)
		client.Write([]byte("lo world"))
	}()
	b, err := Until(server, nil, 64, upTo(5))
	if err != nil || !bytes.HasPrefix(b, []byte("hel")) || len(b) < 5 {
		t.Fatalf("Until: %q, %v", b, err)
	}
	all := make([]byte, 11)
	if _, err := io.ReadFull(server, all); err != nil || string(all) != "hello world" {
		t.Fatalf("read after peek: %q, %v", all, err)
	}
}

func TestUntilEnds(t *testing.T) {
	// A FIN after some bytes ends the wait at once, not at the deadline.
	client, server := pair(t)
	client.Write([]byte("abc"))
	client.CloseWrite()
	start := time.Now()
	if _, err := Until(server, nil, 64, upTo(10)); !errors.Is(err, io.ErrUnexpectedEOF) || time.Since(start) > 2*time.Second {
		t.Errorf("partial then FIN: %v after %v", err, time.Since(start))
	}
	// A FIN before any byte is io.EOF.
	client, server = pair(t)
	client.CloseWrite()
	if _, err := Until(server, nil, 64, upTo(1)); err != io.EOF {
		t.Errorf("FIN only: %v, want io.EOF", err)
	}
	// More than max bytes wanted.
	client, server = pair(t)
	client.Write(bytes.Repeat([]byte("x"), 100))
	if b, err := Until(server, make([]byte, 0, 8), 32, upTo(50)); !errors.Is(err, ErrFull) || len(b) != 32 {
		t.Errorf("over max: %d bytes, %v", len(b), err)
	}
}
