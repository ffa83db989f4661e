package tests

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSnilistenRoutesByName(t *testing.T) {
	dir := socketDir(t)
	unixBackend(t, dir, "a.example.test", true)
	unixBackend(t, dir, "b.example.test", true)
	unixBackend(t, dir, "_.sub.example.test", true)
	s := startSnilisten(t, "-unix-directory", dir, "-proxy-proto", "-default-hostname", "b.example.test")

	for _, tc := range []struct{ sni, backend string }{
		{"a.example.test", "a.example.test"},
		{"b.example.test", "b.example.test"},
		{"A.Example.TEST", "a.example.test"},         // case folded
		{"x.sub.example.test", "_.sub.example.test"}, // wildcard
	} {
		body, err := httpsGet(t, s.Addr, tc.sni, "/")
		if err != nil {
			t.Fatalf("GET with SNI %q: %v", tc.sni, err)
		}
		if !strings.Contains(body, "backend="+tc.backend+"\n") {
			t.Errorf("SNI %q reached the wrong backend:\n%s", tc.sni, body)
		}
		// The PROXY v2 header carries the client's real address and the
		// canonical name as the authority TLV.
		if !strings.Contains(body, "remote=127.0.0.1:") || !strings.Contains(body, "proxy_version=2") {
			t.Errorf("SNI %q: backend did not see the client through a v2 header:\n%s", tc.sni, body)
		}
		if want := "authority=" + strings.ToLower(tc.sni) + "\n"; !strings.Contains(body, want) {
			t.Errorf("SNI %q: want %q in\n%s", tc.sni, want, body)
		}
	}

	// The client's own port must be the one the backend sees.
	c, err := tlsDial(t, s.Addr, "a.example.test")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n")
	reply, _ := io.ReadAll(c)
	c.Close()
	if want := "remote=" + c.LocalAddr().String() + "\n"; !bytes.Contains(reply, []byte(want)) {
		t.Errorf("backend saw another client address; want %q in\n%s", want, reply)
	}

	// curl, with a trailing dot in the name.
	need(t, "curl")
	port := s.Addr[strings.LastIndexByte(s.Addr, ':')+1:]
	out, err := exec.Command("curl", "-sS", "--cacert", testPKI(t).CAFile,
		"--resolve", "b.example.test:"+port+":127.0.0.1",
		"https://b.example.test:"+port+"/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "backend=b.example.test") {
		t.Errorf("curl: %v\n%s", err, out)
	}
	out, err = exec.Command("curl", "-sS", "--cacert", testPKI(t).CAFile,
		"--resolve", "a.example.test.:"+port+":127.0.0.1",
		"https://a.example.test.:"+port+"/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "backend=a.example.test") {
		t.Errorf("curl with trailing dot: %v\n%s", err, out)
	}

	// No SNI at all: the default host name.
	cfg := testPKI(t).ClientConfig("")
	cfg.InsecureSkipVerify = true // an IP literal: no SNI is sent
	nc, err := tls.Dial("tcp", s.Addr, cfg)
	if err != nil {
		t.Fatalf("no-SNI client: %v", err)
	}
	fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	reply, _ = io.ReadAll(nc)
	nc.Close()
	if !bytes.Contains(reply, []byte("backend=b.example.test")) {
		t.Errorf("no-SNI client did not reach the default host:\n%s", reply)
	}

	waitLog(t, s.Proc, "outcome=ok", "sni=a.example.test", "backend="+filepath.Join(dir, "a.example.test"), "client=127.0.0.1:", "up=", "down=")
}

func TestSnilistenProxyV1AndRaw(t *testing.T) {
	dir := socketDir(t)
	unixBackend(t, dir, "v1.example.test", true)
	s := startSnilisten(t, "-unix-directory", dir, "-proxy-proto=v1")
	body, err := httpsGet(t, s.Addr, "v1.example.test", "/")
	if err != nil || !strings.Contains(body, "proxy_version=1") || !strings.Contains(body, "remote=127.0.0.1:") {
		t.Fatalf("v1 header: %v\n%s", err, body)
	}

	raw := socketDir(t)
	unixBackend(t, raw, "raw.example.test", false)
	s2 := startSnilisten(t, "-unix-directory", raw)
	body, err = httpsGet(t, s2.Addr, "raw.example.test", "/")
	if err != nil || !strings.Contains(body, "backend=raw.example.test") {
		t.Fatalf("raw stream: %v\n%s", err, body)
	}
}

func TestSnilistenRefusals(t *testing.T) {
	dir := socketDir(t)
	unixBackend(t, dir, "ok.example.test", false)
	// A stale socket: bound, never listened on, as left by a crashed server.
	stale := filepath.Join(dir, "stale.example.test")
	fd, _ := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	s := startSnilisten(t, "-unix-directory", dir, "-peek-timeout", "1s")

	_, err := tlsDial(t, s.Addr, "unknown.example.test")
	if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Errorf("unknown name: want an unrecognized_name alert, got %v", err)
	}
	_, err = tlsDial(t, s.Addr, "stale.example.test")
	if err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("stale socket: want an internal_error alert, got %v", err)
	}
	waitFor(t, 5*time.Second, "log of the stale socket", func() bool {
		return len(logLines(s.Proc, "outcome=backend_error", stale, "stale")) > 0
	})
	if len(logLines(s.Proc, "outcome=unknown_name", "sni=unknown.example.test")) == 0 {
		t.Errorf("no log line for the unknown name:\n%s", s.Output())
	}

	// No SNI and no default host name.
	reply, _ := sendRaw(t, s.Addr, rawHello(""))
	if alertOf(reply) != 112 {
		t.Errorf("no SNI: want alert 112 (unrecognized_name), got %x", reply)
	}
	// Garbage and plain HTTP are closed without a TLS alert.
	for _, junk := range [][]byte{[]byte("GET / HTTP/1.1\r\nHost: ok.example.test\r\n\r\n"), {0x00, 0xff, 0x13, 0x37, 0x42}} {
		reply, _ := sendRaw(t, s.Addr, junk)
		if len(reply) != 0 {
			t.Errorf("%q: want a plain close, got %q", junk, reply)
		}
	}
	waitFor(t, 5*time.Second, "not_tls log lines", func() bool { return len(logLines(s.Proc, "outcome=not_tls")) == 2 })

	// A client that stalls is closed at the peek timeout while others are served.
	stall, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stall.Close()
	stall.Write(rawHello("ok.example.test")[:20])
	if body, err := httpsGet(t, s.Addr, "ok.example.test", "/"); err != nil || !strings.Contains(body, "backend=ok.example.test") {
		t.Errorf("a stalled client blocked another: %v", err)
	}
	stall.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if n, err := stall.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("stalled client not closed by the peek timeout: read %d, %v", n, err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("stalled client closed only after %v (peek timeout 1s)", time.Since(start))
	}
	waitFor(t, 5*time.Second, "peek_timeout log line", func() bool { return len(logLines(s.Proc, "outcome=peek_timeout")) == 1 })
}

// TestSnilistenTraversal sends names that try to leave the socket
// directory. A trap socket sits where each traversal would land: it must
// never be connected to, and every client gets unrecognized_name.
func TestSnilistenTraversal(t *testing.T) {
	root := socketDir(t)
	dir := filepath.Join(root, "tls")
	os.Mkdir(dir, 0o755)
	var trapHits sync.WaitGroup
	hits := 0
	var mu sync.Mutex
	for _, trap := range []string{filepath.Join(root, "trap"), filepath.Join(root, "tls", "..", "etc"), "/tmp/snit-trap"} {
		os.Remove(trap)
		ln, err := net.Listen("unix", trap)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		defer os.Remove(trap)
		trapHits.Add(1)
		go func() {
			defer trapHits.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				hits++
				mu.Unlock()
				c.Close()
			}
		}()
	}
	// A directory-escaping symlink is the operator's business; a name
	// cannot reach one placed outside dir.
	s := startSnilisten(t, "-unix-directory", dir)
	for _, name := range []string{"../trap", "..", ".", "../etc", "a/../../trap", "..%2ftrap", "%2e%2e/trap",
		"/tmp/snit-trap", "\x00trap", "trap\x00.example.test", "..\\trap", strings.Repeat("a", 300), "ex\u00e4mple.test", "127.0.0.1"} {
		reply, err := sendRaw(t, s.Addr, rawHello(name))
		if alertOf(reply) != 112 {
			t.Errorf("name %q: want alert 112 (unrecognized_name), got %x, %v", name, reply, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 0 {
		t.Fatalf("a traversal name reached a socket outside the directory %d times", hits)
	}
	waitFor(t, 5*time.Second, "an invalid_name log line per bad name", func() bool { return len(logLines(s.Proc, "outcome=invalid_name")) >= 13 })
}

// TestSnilistenIntegrity sends 256 MiB each way at the same time through
// the relay and checks both with SHA-256.
func TestSnilistenIntegrity(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 16 << 20
	}
	dir := socketDir(t)
	echoBackend(t, dir, "echo.example.test")
	s := startSnilisten(t, "-unix-directory", dir)
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello := rawHello("echo.example.test")
	sent, got := sha256.New(), sha256.New()
	done := make(chan error, 1)
	go func() {
		src := io.MultiReader(bytes.NewReader(hello), io.LimitReader(rand.NewChaCha8([32]byte{7}), size))
		_, err := io.Copy(c, io.TeeReader(src, sent))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		done <- err
	}()
	n, err := io.Copy(got, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n != size+int64(len(hello)) || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("echoed %d bytes of %d; hashes equal: %v", n, size+int64(len(hello)), bytes.Equal(sent.Sum(nil), got.Sum(nil)))
	}
	want := fmt.Sprintf("up=%d down=%d", n, n)
	waitFor(t, 5*time.Second, "log line with "+want, func() bool { return len(logLines(s.Proc, want, "outcome=ok")) == 1 })
}

// TestSnilistenHalfClose checks both directions of half-close: the client
// ends its side and still receives; the backend ends its side and still
// receives.
func TestSnilistenHalfClose(t *testing.T) {
	dir := socketDir(t)
	ln, err := net.Listen("unix", filepath.Join(dir, "half.example.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := startSnilisten(t, "-unix-directory", dir)
	hello := rawHello("half.example.test")

	// 1. Client half-closes first; the backend answers after its EOF.
	go func() {
		b, err := ln.Accept()
		if err != nil {
			return
		}
		defer b.Close()
		all, _ := io.ReadAll(b) // until the client's FIN arrives
		fmt.Fprintf(b, "got %d bytes", len(all))
	}()
	c, _ := net.Dial("tcp", s.Addr)
	c.Write(hello)
	c.Write([]byte("request"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(c)
	c.Close()
	if want := fmt.Sprintf("got %d bytes", len(hello)+7); string(reply) != want || err != nil {
		t.Errorf("client half-close: got %q, %v; want %q", reply, err, want)
	}

	// 2. Backend half-closes first; the client keeps sending after the EOF.
	result := make(chan string, 1)
	go func() {
		b, err := ln.Accept()
		if err != nil {
			return
		}
		defer b.Close()
		b.Write([]byte("banner"))
		b.(*net.UnixConn).CloseWrite()
		all, _ := io.ReadAll(b)
		result <- string(all)
	}()
	c, _ = net.Dial("tcp", s.Addr)
	defer c.Close()
	c.Write(hello)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	banner, err := io.ReadAll(c) // ends at the backend's FIN
	if string(banner) != "banner" || err != nil {
		t.Fatalf("backend half-close: got %q, %v", banner, err)
	}
	c.Write([]byte("after-eof"))
	c.(*net.TCPConn).CloseWrite()
	select {
	case got := <-result:
		if !strings.HasSuffix(got, "after-eof") {
			t.Errorf("backend got %q after its half-close", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend never saw the client's bytes after its half-close")
	}
}

func TestSnilistenConcurrentAndNoLeak(t *testing.T) {
	dir := socketDir(t)
	unixBackend(t, dir, "many.example.test", false)
	echoBackend(t, dir, "echo.example.test")
	s := startSnilisten(t, "-unix-directory", dir, "-q")
	// Warm up so that the runtime's own descriptors (epoll, pipes) exist.
	if _, err := httpsGet(t, s.Addr, "many.example.test", "/"); err != nil {
		t.Fatal(err)
	}
	baseline := socketCount(t, s.Pid())

	// 200 concurrent TLS requests.
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := httpsGet(t, s.Addr, "many.example.test", fmt.Sprintf("/%d", i))
			if err == nil && !strings.Contains(body, "backend=many.example.test") {
				err = fmt.Errorf("wrong body %q", body)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// 1000 more connections of every kind: served, refused, garbage, cut.
	for i := range 1000 {
		switch i % 4 {
		case 0:
			c, err := net.Dial("tcp", s.Addr)
			if err == nil {
				c.Write(rawHello("echo.example.test"))
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
			}
		case 1:
			sendRaw(t, s.Addr, rawHello("nobody.example.test"))
		case 2:
			sendRaw(t, s.Addr, []byte("garbage"))
		case 3:
			c, err := net.Dial("tcp", s.Addr)
			if err == nil {
				c.Write(rawHello("echo.example.test")[:30])
				c.Close()
			}
		}
	}
	waitFor(t, 10*time.Second, "open sockets back at the baseline", func() bool { return socketCount(t, s.Pid()) <= baseline })
}

// TestSnilistenDeferredAccept: snilisten's TCP listener defers accepting
// a connection until its first bytes arrive (TCP_DEFER_ACCEPT), so that
// the hello is there when it looks. A silent client is not accepted at
// once, while a TLS client that connected after it is; the silent one is
// accepted a little later all the same and closed at the peek timeout.
func TestSnilistenDeferredAccept(t *testing.T) {
	dir := socketDir(t)
	unixBackend(t, dir, "app.example.test", false)
	s, m := startSnilistenMetrics(t, "-unix-directory", dir, "-peek-timeout", "1s", "-q")
	accepted := func() float64 { return metricValue(t, m, "snilisten_connections_accepted_total", "") }

	silent, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	connected := time.Now()
	if body, err := httpsGet(t, s.Addr, "app.example.test", "/"); err != nil || !strings.Contains(body, "backend=app.example.test") {
		t.Fatalf("TLS client: %v %s", err, body)
	}
	n, elapsed := accepted(), time.Since(connected)
	if elapsed > 800*time.Millisecond {
		t.Skipf("the TLS request took %v: longer than the deferral lasts, too slow to tell", elapsed)
	}
	if n != 1 {
		t.Fatalf("%v connections accepted while the silent one had sent nothing, want only the TLS client's", n)
	}
	waitFor(t, 15*time.Second, "the silent client accepted and closed at the peek timeout", func() bool {
		return metricValue(t, m, "snilisten_connections_finished_total", `outcome="peek_timeout"`) == 1
	})
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); err == nil {
		t.Errorf("silent client read %d bytes, want the connection closed", n)
	}
}

// TestSnilistenNoDelay: the sockets snilisten holds for a relayed client
// and, in tcp mode, for its backend have Nagle's algorithm off, as Go
// would set it: with it on, the small records of a TLS handshake wait for
// the peer's delayed ACK, 40 ms a connection. The fast paths set it
// without Go: on the listening socket (accepted sockets inherit it) and
// on the raw backend socket. Seen from inside snilisten, with duplicates
// of its descriptors (pidfd_getfd).
func TestSnilistenNoDelay(t *testing.T) {
	backendLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backendLn.Close()
	seen := make(chan net.Addr, 1)
	go func() {
		c, err := backendLn.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		seen <- c.RemoteAddr() // snilisten's end of the backend connection
		tc := tls.Server(c, testPKI(t).ServerConfig())
		tc.Handshake()
		io.Copy(io.Discard, tc)
	}()
	dir := socketDir(t)
	unixBackend(t, dir, "app.example.test", false)
	for _, tc := range []struct {
		mode string
		args []string
		sni  string
	}{
		{"unix", []string{"-unix-directory", dir}, "app.example.test"},
		{"tcp", []string{"-mode", "tcp", "-backend-cidr", "127.0.0.0/8", "-backend-port", fmt.Sprint(backendLn.Addr().(*net.TCPAddr).Port)}, "localhost"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			s := startSnilisten(t, append(tc.args, "-q")...)
			c, err := tlsDial(t, s.Addr, tc.sni)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			check := func(what string, fd int) {
				defer unix.Close(fd)
				if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
					t.Errorf("snilisten's socket for the %s: TCP_NODELAY = %d (%v), want on", what, v, err)
				}
			}
			check("client", socketOf(t, s.Cmd.Process.Pid, unix.Getpeername, c.LocalAddr()))
			if tc.mode == "tcp" {
				check("backend", socketOf(t, s.Cmd.Process.Pid, unix.Getsockname, <-seen))
			}
		})
	}
}

// socketOf returns a duplicate of the TCP socket process pid holds whose
// address (as name returns it: unix.Getpeername, unix.Getsockname) is
// addr.
func socketOf(t *testing.T, pid int, name func(int) (unix.Sockaddr, error), addr net.Addr) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Skipf("pidfd_open: %v", err)
	}
	defer unix.Close(pidfd)
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var target int
		if _, err := fmt.Sscan(e.Name(), &target); err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, target, 0)
		if err != nil {
			continue // closed meanwhile
		}
		if sa, err := name(fd); err == nil {
			if in, ok := sa.(*unix.SockaddrInet4); ok && (&net.TCPAddr{IP: in.Addr[:], Port: in.Port}).String() == addr.String() {
				return fd
			}
		}
		unix.Close(fd)
	}
	t.Fatalf("process %d holds no socket at %v", pid, addr)
	return -1
}
