package sockpeek

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

// TestBudget: peeks beyond the free part of their buffers draw on one
// budget; one that would overdraw it fails at once with ErrBudget, and
// what a peek held is returned when it ends.
func TestBudget(t *testing.T) {
	const free, limit = 4096, 3 * 8192
	b := NewBudget(limit, free)
	type result struct {
		n   int
		err error
	}
	var held []chan result
	var clients []*net.TCPConn
	for i := range 4 {
		client, server := pair(t)
		clients = append(clients, client)
		client.Write(make([]byte, 12000)) // needs a buffer of 16384: 12288 counted
		ch := make(chan result, 1)
		go func() {
			got, err := b.Until(server, make([]byte, 0, 1024), 1<<20, upTo(1<<20))
			ch <- result{len(got), err}
		}()
		if i < 2 {
			// Wait until this peek holds its share.
			deadline := time.Now().Add(10 * time.Second)
			for b.Used() < int64((i+1)*(16384-free)) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if b.Used() != int64((i+1)*(16384-free)) {
				t.Fatalf("after %d peeks: %d bytes used, want %d", i+1, b.Used(), (i+1)*(16384-free))
			}
			held = append(held, ch)
			continue
		}
		// Two peeks hold 24576 bytes: a third cannot grow beyond 8192.
		r := <-ch
		if !errors.Is(r.err, ErrBudget) {
			t.Fatalf("peek %d: %d bytes, %v; want ErrBudget", i+1, r.n, r.err)
		}
	}
	if b.Used() != 2*(16384-free) {
		t.Errorf("refused peeks kept %d bytes of the budget", b.Used()-2*(16384-free))
	}
	for i, c := range clients[:2] {
		c.Close()
		if r := <-held[i]; r.err == nil {
			t.Errorf("held peek %d: no error after its client closed", i)
		}
	}
	if b.Used() != 0 {
		t.Errorf("%d bytes still used after every peek ended", b.Used())
	}
	var nilBudget *Budget
	client, server := pair(t)
	client.Write([]byte("hello"))
	if got, err := nilBudget.Until(server, nil, 100, upTo(5)); err != nil || string(got) != "hello" {
		t.Errorf("nil budget: %q, %v", got, err)
	}
}
