package clienthello

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns both ends of a fresh loopback TCP connection: the
// server's accepted conn and the client's. Both are closed when the test
// ends.
func tcpPair(tb testing.TB) (server, client *net.TCPConn) {
	tb.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		tb.Fatal(err)
	}
	server, err = ln.AcceptTCP()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// peekResult is what Peek returned, for tests that run it in a goroutine.
type peekResult struct {
	info Info
	buf  []byte
	err  error
}

func goPeek(c *net.TCPConn, buf []byte, limit int) <-chan peekResult {
	ch := make(chan peekResult, 1)
	go func() {
		info, b, err := Peek(c, buf, limit)
		ch <- peekResult{info, b, err}
	}()
	return ch
}

// await waits a bounded time for a Peek running in a goroutine.
func await(t *testing.T, ch <-chan peekResult) peekResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("Peek did not return within 20s")
		return peekResult{}
	}
}

// readAll reads n bytes from c with a bounded wait.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes after Peek: %v", n, err)
	}
	return b
}

func TestPeekLeavesHelloUnread(t *testing.T) {
	for _, c := range loadCaptures(t) {
		t.Run(c.file, func(t *testing.T) {
			server, client := tcpPair(t)
			trailer := []byte("\x17\x03\x03\x00\x03abc") // what follows the hello
			if _, err := client.Write(append(c.data[:len(c.data):len(c.data)], trailer...)); err != nil {
				t.Fatal(err)
			}
			server.SetReadDeadline(time.Now().Add(10 * time.Second))
			info, buf, err := Peek(server, nil, DefaultLimit)
			if err != nil {
				t.Fatalf("Peek: %v", err)
			}
			c.check(t, info, c.bytes, c.records)
			if !bytes.HasPrefix(buf, c.data) {
				t.Errorf("Peek's buffer does not start with the hello")
			}
			// Everything is still in the socket, in order.
			got := readN(t, server, len(c.data)+len(trailer))
			if !bytes.Equal(got, append(c.data[:len(c.data):len(c.data)], trailer...)) {
				t.Errorf("bytes read after Peek differ from the bytes sent")
			}
			// A second Peek on the drained socket waits and honours the
			// deadline.
			server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := Peek(server, buf, DefaultLimit); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Peek on a drained socket: err = %v, want a deadline error", err)
			}
		})
	}
}

// A hello that arrives in pieces over several writes (several TCP
// segments), split inside record headers and inside the handshake header,
// is waited for and parsed whole; a small starting buffer is grown.
func TestPeekDribbled(t *testing.T) {
	caps := loadCaptures(t)
	for _, c := range []capture{caps[0], caps[6]} { // a 517-byte and a 1.5 KB hello
		msg := handshakeOf(t, c.data)
		wire, records := frame(msg, func() int { return 100 })
		cuts := []int{1, 3, 5, 7, 9, 104, 106, 400, len(wire) - 1}
		t.Run(c.file, func(t *testing.T) {
			server, client := tcpPair(t)
			server.SetReadDeadline(time.Now().Add(20 * time.Second))
			ch := goPeek(server, make([]byte, 0, 16), DefaultLimit)
			prev := 0
			for _, cut := range cuts {
				if _, err := client.Write(wire[prev:cut]); err != nil {
					t.Fatal(err)
				}
				prev = cut
				time.Sleep(5 * time.Millisecond) // separate segments
				select {
				case r := <-ch:
					t.Fatalf("Peek returned after %d of %d bytes: %v", cut, len(wire), r.err)
				default:
				}
			}
			if _, err := client.Write(wire[prev:]); err != nil {
				t.Fatal(err)
			}
			r := await(t, ch)
			if r.err != nil {
				t.Fatalf("Peek: %v", r.err)
			}
			c.check(t, r.info, len(wire), records)
			if got := readN(t, server, len(wire)); !bytes.Equal(got, wire) {
				t.Errorf("bytes read after Peek differ from the bytes sent")
			}
		})
	}
}

func TestPeekDeadline(t *testing.T) {
	c := loadCaptures(t)[0]
	server, client := tcpPair(t)
	if _, err := client.Write(c.data[:100]); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	ch := goPeek(server, nil, DefaultLimit)
	r := await(t, ch)
	if !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("Peek of a stalled hello: err = %v, want a deadline error", r.err)
	}
	if !bytes.Equal(r.buf, c.data[:100]) {
		t.Errorf("Peek returned %d bytes with the deadline error, want the 100 peeked", len(r.buf))
	}
	// The partial hello is still unread.
	if got := readN(t, server, 100); !bytes.Equal(got, c.data[:100]) {
		t.Errorf("bytes read after Peek differ from the bytes sent")
	}
}

func TestPeekEOF(t *testing.T) {
	c := loadCaptures(t)[0]
	t.Run("nothing sent", func(t *testing.T) {
		server, client := tcpPair(t)
		client.CloseWrite()
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := Peek(server, nil, DefaultLimit)
		if err != io.EOF {
			t.Fatalf("err = %v, want io.EOF", err)
		}
	})
	// MSG_PEEK never reports end of stream while unread bytes remain: a
	// half-sent hello followed by FIN must still end the wait.
	t.Run("half a hello then FIN", func(t *testing.T) {
		server, client := tcpPair(t)
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		ch := goPeek(server, nil, DefaultLimit)
		client.Write(c.data[:200])
		time.Sleep(10 * time.Millisecond)
		client.CloseWrite()
		r := await(t, ch)
		if !errors.Is(r.err, io.ErrUnexpectedEOF) {
			t.Fatalf("err = %v, want io.ErrUnexpectedEOF", r.err)
		}
	})
	t.Run("half a hello and FIN together", func(t *testing.T) {
		server, client := tcpPair(t)
		client.Write(c.data[:200])
		client.CloseWrite()
		time.Sleep(10 * time.Millisecond)
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := Peek(server, nil, DefaultLimit)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("whole hello then FIN", func(t *testing.T) {
		server, client := tcpPair(t)
		client.Write(c.data)
		client.CloseWrite()
		time.Sleep(10 * time.Millisecond)
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		info, _, err := Peek(server, nil, DefaultLimit)
		if err != nil || info.ServerName() != c.sni {
			t.Fatalf("Peek = %q, %v", info.ServerName(), err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		server, client := tcpPair(t)
		client.Write(c.data[:50])
		client.SetLinger(0)
		client.Close() // RST
		time.Sleep(10 * time.Millisecond)
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := Peek(server, nil, DefaultLimit)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("Peek after a reset: err = %v, want ECONNRESET", err)
		}
	})
}

// Non-TLS input is refused as soon as its first bytes arrive, without
// waiting for more.
func TestPeekNotTLS(t *testing.T) {
	for name, in := range map[string][]byte{
		"HTTP":    []byte("GET / HTTP/1.1\r\n"),
		"SSLv2":   {0x80, 0x2e, 0x01, 0x00, 0x02},
		"garbage": {0, 1, 2, 3},
	} {
		t.Run(name, func(t *testing.T) {
			server, client := tcpPair(t)
			client.Write(in)
			server.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, buf, err := Peek(server, nil, DefaultLimit)
			if !errors.Is(err, ErrNotTLS) {
				t.Fatalf("err = %v, want ErrNotTLS", err)
			}
			if !bytes.Equal(buf, in) {
				t.Errorf("buf = %q, want the bytes peeked", buf)
			}
			if got := readN(t, server, len(in)); !bytes.Equal(got, in) {
				t.Errorf("read after Peek = %q", got)
			}
		})
	}
}

func TestPeekTooLarge(t *testing.T) {
	// A hello over the limit is refused from its header.
	big := helloMessage(ext{extServerName, sni(0, "big.example.test")}, ext{0x1234, make([]byte, 5000)})
	t.Run("header", func(t *testing.T) {
		server, client := tcpPair(t)
		client.Write(record(big)[:20])
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := Peek(server, nil, 1000); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
	})
	// A hello under the limit but fragmented into so many records that
	// their headers take more than the room Peek allows is refused
	// without growing the buffer beyond that room.
	t.Run("too many records", func(t *testing.T) {
		server, client := tcpPair(t)
		under := helloMessage(ext{extServerName, sni(0, "big.example.test")}, ext{0x1234, make([]byte, 800)})
		go func() {
			frag, _ := frame(under, func() int { return 1 })
			client.SetWriteDeadline(time.Now().Add(10 * time.Second))
			client.Write(frag)
		}()
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, buf, err := Peek(server, nil, 1000)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
		if cap(buf) > 2*wireLimit(1000) {
			t.Errorf("buffer grew to %d bytes for a limit of 1000", cap(buf))
		}
	})
	// Under the limit, fragmented into 1-byte records, it is fine.
	t.Run("fragmented within limit", func(t *testing.T) {
		server, client := tcpPair(t)
		small := helloMessage(ext{extServerName, sni(0, "frag.example.test")})
		frag, records := frame(small, func() int { return 1 })
		go func() {
			client.SetWriteDeadline(time.Now().Add(10 * time.Second))
			client.Write(frag)
		}()
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		info, _, err := Peek(server, nil, DefaultLimit)
		if err != nil || info.ServerName() != "frag.example.test" || info.Records != records {
			t.Fatalf("Peek = %q, %d records, %v", info.ServerName(), info.Records, err)
		}
	})
}

// Peek works on any socket with a SyscallConn, UNIX stream sockets too.
func TestPeekUnix(t *testing.T) {
	c := loadCaptures(t)[1]
	a, b, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	b.Write(c.data)
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	info, _, err := Peek(a, nil, DefaultLimit)
	if err != nil || info.ServerName() != c.sni {
		t.Fatalf("Peek = %q, %v", info.ServerName(), err)
	}
}

func socketpair() (*net.UnixConn, *net.UnixConn, error) {
	dir, err := os.MkdirTemp("", "peek")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: dir + "/s", Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	b, err := net.DialUnix("unix", nil, ln.Addr().(*net.UnixAddr))
	if err != nil {
		return nil, nil, err
	}
	a, err := ln.AcceptUnix()
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// rawFD returns the descriptor of c (which stays open: the test only
// peeks through it).
func rawFD(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// PeekNow sees a whole hello that has arrived, says ErrNotYet for part of
// one or for nothing yet (without waiting), io.EOF for a peer that closed
// silently, and leaves every byte unread.
func TestPeekNow(t *testing.T) {
	for _, c := range loadCaptures(t) {
		if len(c.data) > 4000 {
			continue // more than the caller's buffer: the general path's case
		}
		t.Run(c.file, func(t *testing.T) {
			server, client := tcpPair(t)
			fd := rawFD(t, server)
			buf := make([]byte, 0, 4096)
			if _, _, err := PeekNow(fd, buf, DefaultLimit); !errors.Is(err, ErrNotYet) {
				t.Fatalf("nothing sent: err = %v, want ErrNotYet", err)
			}
			half := len(c.data) / 2
			client.Write(c.data[:half])
			waitQueued(t, server, half)
			if _, _, err := PeekNow(fd, buf, DefaultLimit); !errors.Is(err, ErrNotYet) {
				t.Fatalf("half a hello: err = %v, want ErrNotYet", err)
			}
			client.Write(c.data[half:])
			waitQueued(t, server, len(c.data))
			info, _, err := PeekNow(fd, buf, DefaultLimit)
			if err != nil {
				t.Fatalf("whole hello: %v", err)
			}
			c.check(t, info, c.bytes, c.records)
			if got := readN(t, server, len(c.data)); !bytes.Equal(got, c.data) {
				t.Errorf("bytes read after PeekNow differ from the bytes sent")
			}
		})
	}
	server, client := tcpPair(t)
	client.Close()
	waitQueued(t, server, 0)
	if _, _, err := PeekNow(rawFD(t, server), make([]byte, 0, 64), DefaultLimit); err != io.EOF {
		t.Errorf("silent close: err = %v, want io.EOF", err)
	}
}

// waitQueued waits until n bytes (or, for 0, the peer's FIN) wait in c.
func waitQueued(t *testing.T, c *net.TCPConn, n int) {
	t.Helper()
	fd := rawFD(t, c)
	for range 1000 {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		unix.Poll(fds, 10)
		if q, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && q >= n && fds[0].Revents != 0 {
			return
		}
	}
	t.Fatalf("%d bytes never arrived", n)
}
