package rawsys

import (
	"errors"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func listenerFD(t *testing.T, ln net.Listener) int {
	t.Helper()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fd := int(f.Fd()) // Fd makes it blocking: undo that once
	unix.SetNonblock(fd, true)
	return fd
}

// acceptSoon accepts the connection just made to the listening socket lfd,
// waiting a moment for it if need be.
func acceptSoon(t *testing.T, lfd int) (int, *net.TCPAddr) {
	t.Helper()
	for range 1000 {
		fd, client, err := Accept4(lfd)
		if err == nil {
			return fd, client
		}
		if err != unix.EAGAIN {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no connection to accept")
	return -1, nil
}

// Accept4 returns a non-blocking socket and the client's address exactly
// as the client sees its own, for IPv4 and IPv6; Getsockname the address
// the client connected to.
func TestAccept4Addresses(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skip(err)
			}
			defer ln.Close()
			lfd := listenerFD(t, ln)
			if _, _, err := Accept4(lfd); err != unix.EAGAIN {
				t.Fatalf("nothing queued: err = %v, want EAGAIN", err)
			}
			c, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fd, client := acceptSoon(t, lfd)
			defer Close(fd)
			if client.String() != c.LocalAddr().String() {
				t.Errorf("client %v, want %v", client, c.LocalAddr())
			}
			local, err := Getsockname(fd)
			if err != nil || local.String() != ln.Addr().String() {
				t.Errorf("local %v (%v), want %v", local, err, ln.Addr())
			}
			if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
				t.Error("accepted socket is blocking")
			}
			if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
				t.Error("accepted socket is inherited across exec")
			}
		})
	}
}

// ConnectUnix reports what it found at the path the way connect(2) does,
// which is what lib/backend tells its cases by.
func TestConnectUnix(t *testing.T) {
	dir := t.TempDir()
	stream := filepath.Join(dir, "stream")
	ln, err := net.Listen("unix", stream)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seq := filepath.Join(dir, "seq")
	sl, err := net.Listen("unixpacket", seq)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()

	fd, err := ConnectUnix(stream, unix.SOCK_STREAM)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello")
	if n, err := Write(fd, msg); err != nil || n != len(msg) {
		t.Fatalf("write: %d, %v", n, err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Errorf("backend read %q, %v", buf[:n], err)
	}
	c.Close()
	Close(fd)

	for _, tc := range []struct {
		path string
		typ  int
		want error
	}{
		{filepath.Join(dir, "missing"), unix.SOCK_STREAM, unix.ENOENT},
		{seq, unix.SOCK_STREAM, unix.EPROTOTYPE},
		{stream, unix.SOCK_SEQPACKET, unix.EPROTOTYPE},
		{"/" + strings.Repeat("x", 120), unix.SOCK_STREAM, unix.EINVAL},
		{"", unix.SOCK_STREAM, unix.EINVAL},
	} {
		if fd, err := ConnectUnix(tc.path, tc.typ); !errors.Is(err, tc.want) || fd != -1 {
			t.Errorf("ConnectUnix(%.20q, %d) = %d, %v; want -1, %v", tc.path, tc.typ, fd, err, tc.want)
		}
	}
}

// SendFD passes a working descriptor along with the payload.
func TestSendFD(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := ConnectUnix(path, unix.SOCK_SEQPACKET)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(s)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := SendFD(s, []byte("msg"), int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	w.Close()
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf, oob := make([]byte, 16), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil || string(buf[:n]) != "msg" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v, %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights %v, %v", fds, err)
	}
	got := os.NewFile(uintptr(fds[0]), "passed")
	defer got.Close()
	if _, err := got.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := r.Read(b); err != nil || b[0] != 'x' {
		t.Errorf("the passed descriptor is not the pipe's write end: %q, %v", b, err)
	}
}

func TestSocketDomain(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fds[0])
	defer Close(fds[1])
	s, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(s)
	if got := SocketDomain(fds[0]); got != unix.AF_UNIX {
		t.Errorf("socketpair: %d, want AF_UNIX", got)
	}
	if got := SocketDomain(s); got != unix.AF_INET6 {
		t.Errorf("IPv6 socket: %d, want AF_INET6", got)
	}
	if got := SocketDomain(-1); got != -1 {
		t.Errorf("bad descriptor: %d, want -1", got)
	}
}

// Send reports a peer that has gone as EPIPE without raising SIGPIPE;
// write(2) in the same place raises it, which shows the test would see it.
func TestSendNoSignal(t *testing.T) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGPIPE)
	defer signal.Stop(sigs)
	raised := func() bool {
		select {
		case <-sigs:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}
	for _, tc := range []struct {
		name   string
		send   func(int, []byte) (int, error)
		signal bool
	}{
		{"Send", Send, false},
		{"Write", Write, true},
	} {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		Close(fds[1])
		if _, err := tc.send(fds[0], []byte("x")); err != unix.EPIPE {
			t.Errorf("%s to a closed peer: %v, want EPIPE", tc.name, err)
		}
		if got := raised(); got != tc.signal {
			t.Errorf("%s to a closed peer: SIGPIPE raised %v, want %v", tc.name, got, tc.signal)
		}
		Close(fds[0])
	}
}

// TCP_NODELAY set on a listening socket holds for the connections
// accepted from it, which is what lets the accept loop skip setting it on
// each.
func TestSetNoDelayInherited(t *testing.T) {
	for _, set := range []bool{false, true} {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lfd := listenerFD(t, ln)
		if set {
			if err := SetNoDelay(lfd); err != nil {
				t.Fatal(err)
			}
		}
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fd, _ := acceptSoon(t, lfd)
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
		if err != nil || (v != 0) != set {
			t.Errorf("listener TCP_NODELAY %v: accepted socket has %d (%v)", set, v, err)
		}
		Close(fd)
		c.Close()
		ln.Close()
	}
}
