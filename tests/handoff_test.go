package tests

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHandoffMixedDirectory: stream and seqpacket sockets side by side,
// each used the right way; the handed-off server sees the real client
// without any PROXY header; snilisten keeps nothing of handed-off
// connections.
func TestHandoffMixedDirectory(t *testing.T) {
	dir := socketDir(t)
	handoffHTTPS(t, dir, "direct.example.test")
	unixBackend(t, dir, "relayed.example.test", false)
	s := startSnilisten(t, "-unix-directory", dir)

	c, err := tlsDial(t, s.Addr, "direct.example.test")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: direct.example.test\r\n\r\n")
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	reply := string(buf[:n])
	if !strings.Contains(reply, "mode=handoff") || !strings.Contains(reply, "remote="+c.LocalAddr().String()+"\n") {
		t.Fatalf("handed-off server did not see the real client %s:\n%s", c.LocalAddr(), reply)
	}
	// The connection is still open, and snilisten holds nothing of it.
	waitLog(t, s.Proc, "sni=direct.example.test", "outcome=handoff")
	baseline := socketCount(t, s.Pid())
	body, err := httpsGet(t, s.Addr, "relayed.example.test", "/")
	if err != nil || strings.Contains(body, "mode=handoff") || !strings.Contains(body, "backend=relayed.example.test") {
		t.Fatalf("stream socket beside a handoff socket: %v\n%s", err, body)
	}
	waitFor(t, 5*time.Second, "sockets back at the baseline", func() bool { return socketCount(t, s.Pid()) <= baseline })
	// Baseline: the listener only (plus nothing per connection).
	if n := socketCount(t, s.Pid()); n > 2 {
		t.Errorf("snilisten holds %d sockets with one handed-off connection open; want only its listener", n)
	}
	c.Close()

	// curl too.
	need(t, "curl")
	port := s.Addr[strings.LastIndexByte(s.Addr, ':')+1:]
	out, err := exec.Command("curl", "-sS", "--cacert", testPKI(t).CAFile, "--resolve", "direct.example.test:"+port+":127.0.0.1",
		"https://direct.example.test:"+port+"/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mode=handoff") {
		t.Errorf("curl through handoff: %v\n%s", err, out)
	}
}

// TestHandoffSurvivesRestart: killing snilisten in the middle of a 256 MiB
// transfer over a handed-off connection does not interrupt it, and a
// restarted snilisten keeps dispatching.
func TestHandoffSurvivesRestart(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 16 << 20
	}
	dir := socketDir(t)
	// The hello included: it was never consumed.
	startBackend(t, "handoff", filepath.Join(dir, "echo.example.test"), "echo.example.test", backendOpts{Mode: modeEcho})
	handoffHTTPS(t, dir, "web.example.test")
	s := startSnilisten(t, "-unix-directory", dir)

	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello := rawHello("echo.example.test")
	sent, got := sha256.New(), sha256.New()
	quarter := make(chan struct{})
	writeErr := make(chan error, 1)
	go func() {
		w := io.MultiWriter(c, sent)
		w.Write(hello)
		rng := rand.NewChaCha8([32]byte{3})
		chunk := make([]byte, 1<<20)
		for i := int64(0); i < size>>20; i++ {
			rng.Read(chunk)
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
			if i == size>>22 {
				close(quarter)
			}
		}
		writeErr <- c.(*net.TCPConn).CloseWrite()
	}()
	readDone := make(chan int64, 1)
	go func() { n, _ := io.Copy(got, c); readDone <- n }()
	<-quarter
	s.Signal(t, syscall.SIGKILL)
	s.Wait(t, 5*time.Second)
	if err := <-writeErr; err != nil {
		t.Fatalf("transfer broke when snilisten died: %v", err)
	}
	n := <-readDone
	if n != size+int64(len(hello)) || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("echoed %d of %d bytes; hashes equal %v", n, size+int64(len(hello)), bytes.Equal(sent.Sum(nil), got.Sum(nil)))
	}

	s2 := startSnilisten(t, "-unix-directory", dir)
	if body, err := httpsGet(t, s2.Addr, "web.example.test", "/"); err != nil || !strings.Contains(body, "mode=handoff") {
		t.Fatalf("restarted snilisten: %v\n%s", err, body)
	}
}

// TestHandoffStale: a seqpacket socket nobody accepts on gives the client
// internal_error and a log line.
func TestHandoffStale(t *testing.T) {
	dir := socketDir(t)
	stale := filepath.Join(dir, "stale.example.test")
	fd, _ := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	s := startSnilisten(t, "-unix-directory", dir)
	if _, err := tlsDial(t, s.Addr, "stale.example.test"); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("stale handoff socket: want internal_error, got %v", err)
	}
	waitLog(t, s.Proc, "sni=stale.example.test", "outcome=backend_error", stale)
}
