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
	"sync"
	"syscall"
	"testing"
	"time"
)

// notifySocket listens for sd_notify messages like systemd does and
// collects them.
type notifySocket struct {
	Path string
	mu   sync.Mutex
	msgs []string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{Path: filepath.Join(socketDir(t), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) saw(msg string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if strings.Contains(m, msg) {
			return true
		}
	}
	return false
}

// TestSnilistenSocketActivation runs snilisten under systemd-socket-activate:
// it serves the inherited socket (by name too), says READY=1, and on
// SIGTERM drains an in-flight transfer to completion, refuses new
// connections, says STOPPING=1 and exits 0.
func TestSnilistenSocketActivation(t *testing.T) {
	need(t, "systemd-socket-activate")
	dir := socketDir(t)
	echoBackend(t, dir, "echo.example.test")
	unixBackend(t, dir, "web.example.test", false)
	notify := newNotifySocket(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command("systemd-socket-activate", "-l", addr, "--fdname=https",
		"-E", "NOTIFY_SOCKET="+notify.Path,
		bin(t, "snilisten"), "-listen", "fd:https", "-unix-directory", dir, "-shutdown-timeout", "20s")
	p := start(t, cmd)
	waitListening(t, addr) // connections wait in the queue until snilisten runs
	// systemd-socket-activate starts snilisten at the first connection,
	// which waits in the queue meanwhile and must be served.
	if body, err := httpsGet(t, addr, "web.example.test", "/"); err != nil || !strings.Contains(body, "backend=web.example.test") {
		t.Fatalf("through the inherited socket: %v %s", err, body)
	}
	waitFor(t, 10*time.Second, "READY=1", func() bool { return notify.saw("READY=1") })

	// A transfer in flight when SIGTERM arrives completes byte for byte.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const chunks, chunk = 48, 1 << 20
	sent, got := sha256.New(), sha256.New()
	hello := rawHello("echo.example.test")
	writeErr := make(chan error, 1)
	halfway := make(chan struct{})
	go func() {
		w := io.MultiWriter(c, sent)
		if _, err := w.Write(hello); err != nil {
			writeErr <- err
			return
		}
		rng := rand.NewChaCha8([32]byte{1})
		buf := make([]byte, chunk)
		for i := range chunks {
			rng.Read(buf)
			if _, err := w.Write(buf); err != nil {
				writeErr <- err
				return
			}
			if i == chunks/4 {
				close(halfway)
			}
			time.Sleep(15 * time.Millisecond)
		}
		writeErr <- c.(*net.TCPConn).CloseWrite()
	}()
	readDone := make(chan int64, 1)
	go func() { n, _ := io.Copy(got, c); readDone <- n }()
	<-halfway
	p.Signal(t, syscall.SIGTERM)
	waitFor(t, 5*time.Second, "STOPPING=1", func() bool { return notify.saw("STOPPING=1") })
	if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		nc.Close()
		t.Errorf("a new connection was accepted after SIGTERM")
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("writing during the drain: %v", err)
	}
	n := <-readDone
	if want := int64(len(hello) + chunks*chunk); n != want || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("drained transfer: %d of %d bytes, hashes equal %v", n, want, bytes.Equal(sent.Sum(nil), got.Sum(nil)))
	}
	if err := p.Wait(t, 10*time.Second); err != nil {
		t.Fatalf("snilisten exit after SIGTERM: %v (want status 0)\n%s", err, p.Output())
	}
	if len(logLines(p, "sni=echo.example.test", "outcome=ok")) != 1 {
		t.Errorf("no ok log line for the drained transfer:\n%s", p.Output())
	}
}

// TestSnilistenShutdownTimeout: a connection still open at the end of
// the shutdown timeout is cut, and snilisten still exits 0.
func TestSnilistenShutdownTimeout(t *testing.T) {
	dir := socketDir(t)
	echoBackend(t, dir, "echo.example.test")
	s := startSnilisten(t, "-unix-directory", dir, "-shutdown-timeout", "500ms")
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(rawHello("echo.example.test"))
	io.ReadFull(c, make([]byte, len(rawHello("x.example.test"))+3)) // the echo: the relay is up
	s.Signal(t, syscall.SIGTERM)
	if err := s.Wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("idle connection not closed at the shutdown timeout: %v", err)
	}
	waitLog(t, s.Proc, "outcome=shutdown")
}
