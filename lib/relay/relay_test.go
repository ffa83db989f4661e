package relay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := NewEngine(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// unixPair returns the two ends of a UNIX stream connection.
func unixPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	fds, err := syscallSocketpair()
	if err != nil {
		t.Fatal(err)
	}
	fa, fb := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	defer fa.Close()
	defer fb.Close()
	a, _ = net.FileConn(fa)
	b, _ = net.FileConn(fb)
	return a, b
}

// proxied sets up client <-> [relay] <-> server and returns the outer ends
// and a channel with the relay's result.
func proxied(t testing.TB, e *Engine, idle time.Duration) (client, server net.Conn, result chan error, stats *Stats) {
	t.Helper()
	client, proxyIn := tcpPair(t)
	proxyOut, server := unixPair(t)
	result = make(chan error, 1)
	stats = new(Stats)
	if _, err := e.Start(proxyIn, proxyOut, idle, func(s Stats, err error) { *stats = s; result <- err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server, result, stats
}

func TestRelayBothWaysWithHash(t *testing.T) {
	e := newEngine(t)
	client, server, result, stats := proxied(t, e, time.Minute)
	const size = 32 << 20
	var wg sync.WaitGroup
	hashes := make([][]byte, 4)
	copyHashed := func(i int, dst net.Conn, src io.Reader) {
		defer wg.Done()
		h := sha256.New()
		io.Copy(io.MultiWriter(dst, h), src)
		dst.(interface{ CloseWrite() error }).CloseWrite()
		hashes[i] = h.Sum(nil)
	}
	readHashed := func(i int, src net.Conn) {
		defer wg.Done()
		h := sha256.New()
		io.Copy(h, src)
		hashes[i] = h.Sum(nil)
	}
	wg.Add(4)
	go copyHashed(0, client, io.LimitReader(rand.NewChaCha8([32]byte{1}), size))
	go copyHashed(1, server, io.LimitReader(rand.NewChaCha8([32]byte{2}), size))
	go readHashed(2, server)
	go readHashed(3, client)
	wg.Wait()
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hashes[0], hashes[2]) || !bytes.Equal(hashes[1], hashes[3]) {
		t.Fatal("bytes changed on the way")
	}
	if stats.Up != size || stats.Down != size {
		t.Errorf("stats %+v, want %d each way", *stats, size)
	}
}

func TestRelayHalfClose(t *testing.T) {
	e := newEngine(t)
	client, server, result, _ := proxied(t, e, time.Minute)
	client.Write([]byte("question"))
	client.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(server) // ends with the client's half-close
	if err != nil || string(got) != "question" {
		t.Fatalf("server read %q, %v", got, err)
	}
	server.Write([]byte("answer after EOF"))
	server.(*net.UnixConn).CloseWrite()
	reply, err := io.ReadAll(client)
	if err != nil || string(reply) != "answer after EOF" {
		t.Fatalf("client read %q, %v", reply, err)
	}
	if err := <-result; err != nil {
		t.Fatal(err)
	}
}

// TestRelayServerClosesFirst is how most relayed connections end: the
// server answers and closes; the client reads the answer to its end, then
// sends its last bytes (TLS's close_notify) for a server that is gone, and
// closes. Those are dropped, the relay ends cleanly and counts the rest.
// Run both ways round (the backend a UNIX or a TCP socket).
func TestRelayServerClosesFirst(t *testing.T) {
	e := newEngine(t)
	for _, pair := range []struct {
		name string
		make func(testing.TB) (net.Conn, net.Conn)
	}{{"unix", unixPair}, {"tcp", tcpPair}} {
		t.Run(pair.name, func(t *testing.T) {
			client, in := tcpPair(t)
			out, server := pair.make(t)
			defer client.Close()
			result := make(chan error, 1)
			var stats Stats
			if _, err := e.Start(in, out, time.Minute, func(s Stats, err error) { stats = s; result <- err }); err != nil {
				t.Fatal(err)
			}
			request, answer := "GET / HTTP/1.0\r\n\r\n", strings.Repeat("answer ", 1000)
			client.Write([]byte(request))
			got := make([]byte, len(request))
			if _, err := io.ReadFull(server, got); err != nil || string(got) != request {
				t.Fatalf("server read %q, %v", got, err)
			}
			server.Write([]byte(answer))
			server.Close()
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			reply, err := io.ReadAll(client)
			if err != nil || string(reply) != answer {
				t.Fatalf("client read %d bytes (%v), want the %d of the answer and the end", len(reply), err, len(answer))
			}
			client.Write([]byte("close_notify"))
			client.Close()
			awaitClean(t, result)
			// A TCP socket whose peer closed still takes the first
			// write (the peer answers it with a reset); a UNIX one
			// refuses it.
			wantUp := int64(len(request))
			if pair.name == "tcp" && stats.Up == wantUp+int64(len("close_notify")) {
				wantUp = stats.Up
			}
			if stats.Up != wantUp || stats.Down != int64(len(answer)) {
				t.Errorf("counted %d up, %d down; want %d, %d", stats.Up, stats.Down, wantUp, len(answer))
			}
		})
	}
}

// TestRelayEndAfterPause: the client's last bytes come in a second burst,
// with its end: both bursts arrive, and then the end.
func TestRelayEndAfterPause(t *testing.T) {
	e := newEngine(t)
	client, server, result, _ := proxied(t, e, time.Minute)
	client.Write([]byte("first "))
	first := make([]byte, 6)
	if _, err := io.ReadFull(server, first); err != nil {
		t.Fatal(err)
	}
	client.Write([]byte("and last"))
	client.(*net.TCPConn).CloseWrite()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(server)
	if err != nil || string(first)+string(rest) != "first and last" {
		t.Fatalf("server read %q%q, %v", first, rest, err)
	}
	server.Close()
	awaitClean(t, result)
}

func TestRelayIdle(t *testing.T) {
	e := newEngine(t)
	client, _, result, _ := proxied(t, e, 200*time.Millisecond)
	client.Write([]byte("x"))
	select {
	case err := <-result:
		if !errors.Is(err, ErrIdle) {
			t.Fatalf("got %v, want ErrIdle", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not closed")
	}
	client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(client); err != nil {
		t.Errorf("client not closed cleanly: %v", err)
	}
}

func TestRelayAbortAndReset(t *testing.T) {
	e := newEngine(t)
	client, in := tcpPair(t)
	out, server := unixPair(t)
	defer client.Close()
	defer server.Close()
	result := make(chan error, 1)
	s, err := e.Start(in, out, 0, func(_ Stats, err error) { result <- err })
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := <-result; !errors.Is(err, ErrAborted) {
		t.Fatalf("got %v, want ErrAborted", err)
	}

	// A client that resets mid-stream ends the relay with an error.
	client2, server2, result2, _ := proxied(t, e, 0)
	client2.Write([]byte("partial"))
	client2.(*net.TCPConn).SetLinger(0)
	client2.Close()
	select {
	case err := <-result2:
		if err == nil {
			t.Log("reset reported as a clean end") // the RST may arrive after the FIN-less close is read as EOF
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end after a reset")
	}
	server2.Close()
}

// TestRelaySlowReader: a sink that does not read makes the relay stop
// reading (backpressure), holding at most a pipe's worth of bytes.
func TestRelaySlowReader(t *testing.T) {
	e := newEngine(t)
	client, server, _, _ := proxied(t, e, 0)
	written := make(chan int64, 1)
	go func() {
		client.SetWriteDeadline(time.Now().Add(time.Second))
		n, _ := io.Copy(client, io.LimitReader(rand.NewChaCha8([32]byte{}), 256<<20))
		written <- n
	}()
	n := <-written
	if n >= 256<<20 {
		t.Fatalf("all %d bytes were accepted with nobody reading", n)
	}
	// Everything written is still delivered once the server reads.
	client.Close()
	got, _ := io.Copy(io.Discard, server)
	if got != n {
		t.Errorf("server got %d bytes, client wrote %d", got, n)
	}
}

func TestRelayManyCloseInEveryOrder(t *testing.T) {
	e := newEngine(t)
	before := openFDs(t)
	var wg sync.WaitGroup
	for i := range 2000 {
		client, server, result, _ := proxied(t, e, time.Minute)
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch i % 4 {
			case 0:
				client.Close()
				server.Close()
			case 1:
				server.Close()
				client.Close()
			case 2:
				client.(*net.TCPConn).CloseWrite()
				io.ReadAll(server)
				server.Close()
				client.Close()
			case 3:
				client.Write([]byte("x"))
				server.(*net.UnixConn).CloseWrite()
				io.ReadAll(client)
				client.Close()
				server.Close()
			}
			<-result
		}()
	}
	wg.Wait()
	e.Close()
	if after := openFDs(t); after > before {
		t.Errorf("%d descriptors open after, %d before", after, before)
	}
}

func openFDs(t testing.TB) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestRelayPingPong exchanges many small messages, each waiting for the
// answer to the one before: every burst is short, so the relay takes a
// short read as "drained" and relies on the next edge-triggered event for
// the next message. A missed event would hang the exchange.
func TestRelayPingPong(t *testing.T) {
	e := newEngine(t)
	client, server, result, stats := proxied(t, e, 0)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := server.Read(buf)
			if err != nil {
				server.Close()
				return
			}
			if _, err := server.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	client.SetDeadline(time.Now().Add(30 * time.Second))
	const rounds = 2000
	msg, buf := []byte("ping-0123456789"), make([]byte, 64)
	for i := range rounds {
		msg[4] = byte('a' + i%26)
		if _, err := client.Write(msg); err != nil {
			t.Fatalf("round %d: write: %v", i, err)
		}
		if _, err := io.ReadFull(client, buf[:len(msg)]); err != nil {
			t.Fatalf("round %d: read: %v", i, err)
		}
		if !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("round %d: got %q, want %q", i, buf[:len(msg)], msg)
		}
	}
	client.(*net.TCPConn).CloseWrite()
	if _, err := client.Read(buf); err != io.EOF {
		t.Fatalf("after half-close: %v, want EOF", err)
	}
	awaitClean(t, result)
	if want := int64(rounds * len(msg)); stats.Up != want || stats.Down != want {
		t.Errorf("stats %+v, want %d each way", *stats, want)
	}
}

// StartFDs with bytes the caller could not write to a backend whose
// socket was full: they reach the backend first, before the client's own,
// once the backend reads, and the byte counts include them and the bytes
// the caller sent itself.
func TestRelayStartFDsUnsent(t *testing.T) {
	e := newEngine(t)
	client, in := syscallSocketpairT(t)
	out, server := syscallSocketpairT(t)
	// Fill the backend's socket so that nothing more can be written.
	filler := make([]byte, 64<<10)
	unix.SetNonblock(out, true)
	unix.SetNonblock(in, true)
	filled := 0
	for {
		n, err := unix.Write(out, filler)
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		filled += n
	}
	unsent := []byte("the rest of a hello the caller read")
	result := make(chan error, 1)
	var stats Stats
	if _, err := e.StartFDs(in, out, 100, unsent, 0, func(s Stats, err error) { stats = s; result <- err }); err != nil {
		t.Fatal(err)
	}
	cf, sf := os.NewFile(uintptr(client), "client"), os.NewFile(uintptr(server), "server")
	defer cf.Close()
	defer sf.Close()
	if _, err := cf.Write([]byte("+client")); err != nil {
		t.Fatal(err)
	}
	cf.Close() // end of the client's stream
	got, err := io.ReadAll(sf)
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{0}, filled), "the rest of a hello the caller read+client"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("backend got %d bytes ending %q, want %d ending %q", len(got), got[max(0, len(got)-45):], len(want), want[len(want)-45:])
	}
	sf.Close()
	awaitClean(t, result)
	if wantUp := int64(100 + len(unsent) + len("+client")); stats.Up != wantUp {
		t.Errorf("Up = %d, want %d", stats.Up, wantUp)
	}
}

func syscallSocketpairT(t *testing.T) (int, int) {
	t.Helper()
	fds, err := syscallSocketpair()
	if err != nil {
		t.Fatal(err)
	}
	return fds[0], fds[1]
}

// awaitClean waits for a relay to report a clean end.
func awaitClean(t *testing.T, result <-chan error) {
	t.Helper()
	select {
	case err := <-result:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not finish")
	}
}

// pipeFDs counts this process's pipe descriptors.
func pipeFDs(t testing.TB) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

// TestRelayPipeBound relays 12 connections at once, 8 MiB each way, to
// readers that wait before reading so that every direction meets
// backpressure, through an engine allowed 3 pipes: at no time does it
// hold more, every byte arrives unchanged, and connections without a
// pipe leave what their sink has not taken in the source socket.
func TestRelayPipeBound(t *testing.T) {
	const conns, size, maxPipes = 12, 8 << 20, 3
	e, err := NewEngineWithPipes(2, maxPipes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	base := pipeFDs(t)
	start := make(chan struct{})
	done := make(chan struct{})
	mostc := make(chan int)
	go func() {
		most := 0
		for {
			most = max(most, pipeFDs(t)-base)
			select {
			case <-done:
				mostc <- most
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	failures := make(chan string, 4*conns)
	for i := range conns {
		client, server, result, stats := proxied(t, e, time.Minute)
		send := func(dst net.Conn, seed byte) {
			defer wg.Done()
			io.Copy(dst, io.LimitReader(rand.NewChaCha8([32]byte{seed}), size))
			dst.(interface{ CloseWrite() error }).CloseWrite()
		}
		receive := func(src net.Conn, seed byte) {
			defer wg.Done()
			<-start
			want := sha256.New()
			io.Copy(want, io.LimitReader(rand.NewChaCha8([32]byte{seed}), size))
			got := sha256.New()
			if n, _ := io.Copy(got, src); n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				failures <- fmt.Sprintf("connection %d: %d bytes received, changed or cut", i, n)
			}
		}
		wg.Add(4)
		go send(client, byte(2*i))
		go send(server, byte(2*i+1))
		go receive(server, byte(2*i))
		go receive(client, byte(2*i+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := <-result; err != nil {
				failures <- fmt.Sprintf("connection %d: %v", i, err)
			}
			if stats.Up != size || stats.Down != size {
				failures <- fmt.Sprintf("connection %d: stats %+v", i, *stats)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let the backpressure build up
	close(start)
	wg.Wait()
	close(done)
	most := <-mostc
	close(failures)
	for f := range failures {
		t.Error(f)
	}
	if most > 2*maxPipes {
		t.Errorf("%d pipe descriptors open at once, want at most %d", most, 2*maxPipes)
	}
	t.Logf("%d connections, 8 MiB each way, through at most %d pipes: at most %d pipe descriptors open", conns, maxPipes, most)
}
