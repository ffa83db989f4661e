package tests

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/handoff"
)

// senderSource hands a TCP connection to a handoff socket, to be run as
// another user: "sender PATH PORT ANNOUNCE" connects to 127.0.0.1:PORT and
// passes its end to the socket at PATH, announcing the client
// 203.0.113.66:4444 if ANNOUNCE is 1.
const senderSource = `#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
	unsigned char payload[] = {1, 0, 0, 7, 'h', 'o', '.', 't', 'e', 's', 't', 6, 203, 0, 113, 66, 0x11, 0x5c};
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	struct sockaddr_in in;
	struct sockaddr_un un;
	struct iovec iov;
	struct msghdr msg;
	struct cmsghdr *cm;
	int t, u, announce;

	if (argc != 4)
		return 2;
	announce = argv[3][0] == '1';
	t = socket(AF_INET, SOCK_STREAM, 0);
	memset(&in, 0, sizeof in);
	in.sin_family = AF_INET;
	in.sin_port = htons(atoi(argv[2]));
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(t, (struct sockaddr *)&in, sizeof in) != 0) {
		perror("connect tcp");
		return 1;
	}
	u = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	memset(&un, 0, sizeof un);
	un.sun_family = AF_UNIX;
	strncpy(un.sun_path, argv[1], sizeof un.sun_path - 1);
	if (connect(u, (struct sockaddr *)&un, sizeof un) != 0) {
		perror("connect unix");
		return 1;
	}
	if (!announce)
		payload[11] = 0;
	iov.iov_base = payload;
	iov.iov_len = announce ? sizeof payload : 12;
	memset(&msg, 0, sizeof msg);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = ctl.b;
	msg.msg_controllen = sizeof ctl.b;
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &t, sizeof t);
	if (sendmsg(u, &msg, 0) < 0) {
		perror("sendmsg");
		return 1;
	}
	printf("sent\n");
	return 0;
}
`

// TestBindshimHandoffSocketCalls pins -handoff's contract at the level of
// system calls, with the C probe: flags of the returned socket, the
// kernel's addresses, an announced client only from a trusted sender,
// every kind of bad message dropped with its descriptors closed.
func TestBindshimHandoffSocketCalls(t *testing.T) {
	bsNeedRoot(t)
	dir := bsDir(t)
	port := freePort(t)
	pr := bsStartProbe(t, port, "-d", dir, "-p", strconv.Itoa(port), "-m", "0666", "-header-timeout", "300ms", "-handoff", "ho.test")
	sock := filepath.Join(dir, "ho.test")
	pr.expect("", "listening fd=3 nonblock=1 cloexec=1")
	bsWaitSocket(t, pr.p, sock)
	// A SOCK_SEQPACKET socket, which the program takes for its TCP
	// listener.
	if c, err := net.Dial("unix", sock); !errors.Is(err, syscall.EPROTOTYPE) {
		if c != nil {
			c.Close()
		}
		t.Errorf("stream connect to the handoff socket: %v, want EPROTOTYPE", err)
	}
	pr.expect("name 3 16", fmt.Sprintf("len=16 family=2 addr=127.0.0.1:%d", port))
	pr.expect("opt 3", "nodelay=0 v6only=0 domain=2 type=1")

	// Dropped messages: a non-blocking accept says EAGAIN once they are
	// gone, and every descriptor they brought is closed.
	eagain := "accept err=Resource temporarily unavailable"
	drop := func(what string, payload []byte, fds ...int) {
		t.Helper()
		hoSend(t, sock, payload, fds...)
		if got := pr.do("acceptf 128 2048"); !strings.Contains(got, eagain) {
			t.Errorf("%s: %q, want it dropped (EAGAIN)", what, got)
		}
	}
	msg := hoMessage("ho.test")
	c1, f1, fd1 := hoCarry(t, "127.0.0.1", true)
	c2, f2, fd2 := hoCarry(t, "127.0.0.1", true)
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	tcpLn, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tcpLn.Close()
	lnFile, _ := tcpLn.File()
	defer lnFile.Close()
	unixPair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(unixPair[0])
	defer syscall.Close(unixPair[1])

	drop("no descriptor", msg)
	drop("two descriptors", msg, fd1, fd2)
	drop("version 2", append([]byte{2}, msg[1:]...), fd1)
	drop("a name longer than the message", []byte("\x01\x00\x00\x09ho.test\x00"), fd1)
	drop("a client address of 5 bytes", append(msg[:len(msg)-1:len(msg)-1], 5, 1, 2, 3, 4, 5), fd1)
	drop("a client address cut short", append(msg[:len(msg)-1:len(msg)-1], 6, 203, 0, 113, 1), fd1)
	drop("a message of one byte", []byte{1}, fd1)
	drop("a pipe", msg, int(pipeR.Fd()))
	drop("a UNIX socket", msg, unixPair[0])
	drop("a listening TCP socket", msg, int(lnFile.Fd()))
	// A sender that says nothing: at once if it closes, after
	// -header-timeout if it stalls.
	quiet, err := net.Dial("unixpacket", sock)
	if err != nil {
		t.Fatal(err)
	}
	quiet.Close()
	pr.expect("acceptf 128 2048", eagain)
	stall, err := net.Dial("unixpacket", sock)
	if err != nil {
		t.Fatal(err)
	}
	pr.expect("acceptf 128 2048", eagain)
	stall.Close()
	// The dropped TCP connections were closed: the probe holds no copy.
	f1.Close()
	f2.Close()
	hoClosed(t, c1, "dropped message's connection")
	hoClosed(t, c2, "second descriptor of a dropped message")

	// A good message: the socket itself, with the kernel's addresses,
	// and the flags asked for whatever the sender's were.
	c, f, fd0 := hoCarry(t, "127.0.0.51", true)
	hoSend(t, sock, msg, fd0)
	f.Close()
	c.Write([]byte("hello\n"))
	cport := c.LocalAddr().(*net.TCPAddr).Port
	line := pr.expect("acceptf 4 0", "nonblock=0 cloexec=0 accept", fmt.Sprintf("len=16 family=2 addr=- bytes=0200%04xaaaaaaaa", cport))
	fd := bsProbeFD(line)
	pr.expect("peer "+fd+" 16", fmt.Sprintf("len=16 family=2 addr=127.0.0.51:%d", cport))
	pr.expect("name "+fd+" 16", "len=16 family=2 addr="+c.RemoteAddr().String())
	// A real TCP socket: options reach the kernel (IPV6_V6ONLY fails on
	// an IPv4 socket, where a PROXY connection would pretend).
	pr.expect("opt "+fd, "nodelay=0 v6only=-1 domain=2 type=1")
	pr.expect("read "+fd, "data=hello")
	pr.expect("close "+fd, "close r=0")
	hoClosed(t, c, "closed by the program")

	for _, fl := range []struct {
		flags    string
		nonblock bool // the sender's mode, the opposite of what is asked
		want     string
	}{
		{"2048", false, "nonblock=1 cloexec=0"},
		{"524288", true, "nonblock=0 cloexec=1"},
		{"526336", false, "nonblock=1 cloexec=1"},
		{"-1", true, "nonblock=0 cloexec=0"}, // accept()
	} {
		c, f, fd := hoCarry(t, "127.0.0.52", fl.nonblock)
		hoSend(t, sock, msg, fd)
		f.Close()
		if fl.flags == "2048" {
			// Flags accept4 does not know: EINVAL, the message stays.
			pr.expect("acceptf 16 1", "accept err=Invalid argument")
		}
		line := pr.expect("acceptf 16 "+fl.flags, fl.want, "addr="+c.LocalAddr().String())
		pr.expect("close "+bsProbeFD(line), "close r=0")
	}

	// Short of descriptors, accept says EMFILE and loses nothing, though
	// one is free for the sender's connection.
	c, f, fd0 = hoCarry(t, "127.0.0.54", true)
	hoSend(t, sock, msg, fd0)
	f.Close()
	pr.expect("full", "full r=0")
	pr.expect("acceptf 16 0", "accept err=Too many open files")
	pr.expect("unlimit", "unlimit r=0")
	pr.expect("close "+bsProbeFD(pr.expect("acceptf 16 0", "addr="+c.LocalAddr().String())), "close r=0")

	// A client announced by a trusted sender (root) is what accept and
	// getpeername say, in the socket's family; getsockname stays real.
	c, s := hoPair(t, "127.0.0.53")
	if err := handoff.SendMessage(sock, s, handoff.Message{SNI: "ho.test", Client: netip.MustParseAddrPort("203.0.113.60:4444")}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	line = pr.expect("acceptf 16 524288", "nonblock=0 cloexec=1 accept", "len=16 family=2 addr=203.0.113.60:4444")
	fd = bsProbeFD(line)
	pr.expect("peer "+fd+" 16", "len=16 family=2 addr=203.0.113.60:4444")
	pr.expect("peer "+fd+" 8", "len=16 family=2 addr=- bytes=0200115ccb00713caaaa")
	pr.expect("name "+fd+" 16", "addr="+c.RemoteAddr().String())
	pr.expect("opt "+fd, "nodelay=0 v6only=-1 domain=2")
	dup := bsProbeFD(pr.expect("dup " + fd))
	pr.expect("close "+fd, "close r=0")
	pr.expect("peer "+dup+" 16", "addr=203.0.113.60:4444")
	pr.expect("close "+dup, "close r=0")
	pr.expect("peer "+dup+" 16", "err=Bad file descriptor")
	c, s = hoPair(t, "127.0.0.53")
	if err := handoff.SendMessage(sock, s, handoff.Message{Client: netip.MustParseAddrPort("[2001:db8::60]:4445")}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	fd = bsProbeFD(pr.expect("acceptf 64 0", "len=28 family=10"))
	pr.expect("peer "+fd+" 64", "len=28 family=10 addr=- bytes=0a00115d0000000020010db8")
	pr.expect("close "+fd, "close r=0")

	// Another user may connect (the socket's mode lets it) but hand
	// over nothing, whether it announces a client or not: it could pass
	// a TCP socket it made itself, from an address of its choosing.
	sender := filepath.Join(bsDir(t), "sender")
	if out, err := exec.Command("cc", "-std=c99", "-Wall", "-o", sender, bsWriteFile(t, t.TempDir(), "sender.c", senderSource)).CombinedOutput(); err != nil {
		t.Fatalf("cc sender.c: %v\n%s", err, out)
	}
	target, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	tport := strconv.Itoa(target.Addr().(*net.TCPAddr).Port)
	if out, err := bsAsNobody(t, nil, sender, sock, tport, "1"); err != nil || out != "sent\n" {
		t.Fatalf("sender as uid 65534, announcing: %v %q", err, out)
	}
	pr.expect("acceptf 16 0", eagain)
	if out, err := bsAsNobody(t, nil, sender, sock, tport, "0"); err != nil || out != "sent\n" {
		t.Fatalf("sender as uid 65534: %v %q", err, out)
	}
	pr.expect("acceptf 16 0", eagain)
}

// TestBindshimHandoffPython: python's http.server (blocking accept) under
// bindshim -handoff behind snilisten sees the real clients, or the client
// a trusted front announced; bad messages sent straight to its socket
// never reach it.
func TestBindshimHandoffPython(t *testing.T) {
	need(t, "curl")
	dir := bsDir(t)
	p := startPythonHandoff(t, dir, "hopy.example.test", "-m", "0660", "-g", "65534")
	sock := filepath.Join(dir, "hopy.example.test")
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 || st.Sys().(*syscall.Stat_t).Gid != 65534 {
		t.Errorf("socket %s: mode %v gid %d, want a socket 0660 gid 65534", sock, st.Mode(), st.Sys().(*syscall.Stat_t).Gid)
	}
	if c, err := net.Dial("unix", sock); !errors.Is(err, syscall.EPROTOTYPE) {
		if c != nil {
			c.Close()
		}
		t.Errorf("stream connect to the handoff socket: %v, want EPROTOTYPE", err)
	}
	s := startSnilisten(t, "-unix-directory", dir)
	sport := s.Addr[strings.LastIndexByte(s.Addr, ':')+1:]

	// Straight to the socket: bad messages, and a sender that stalls.
	// A blocking accept drops them and waits on.
	c1, f1, fd1 := hoCarry(t, "127.0.0.1", true)
	c2, f2, fd2 := hoCarry(t, "127.0.0.1", true)
	hoSend(t, sock, hoMessage("hopy.example.test"))
	hoSend(t, sock, []byte("\x07garbage"), fd1)
	hoSend(t, sock, hoMessage("hopy.example.test"), fd1, fd2)
	stall, err := net.Dial("unixpacket", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer stall.Close()
	f1.Close()
	f2.Close()
	hoClosed(t, c1, "bad message's connection")
	hoClosed(t, c2, "second descriptor of a message")

	// curl and a Go client through snilisten, each from its own address.
	pki := testPKI(t)
	out, err := exec.Command("curl", "-sS", "--max-time", "20", "--interface", "127.0.0.41", "--cacert", pki.CAFile,
		"--resolve", "hopy.example.test:"+sport+":127.0.0.1", "https://hopy.example.test:"+sport+"/").CombinedOutput()
	want := "client=127.0.0.41 peer=('127.0.0.41', "
	if err != nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), "local=('127.0.0.1', "+sport+")") {
		t.Errorf("curl through snilisten: %v %q, want %q and snilisten's address", err, out, want)
	}
	body, err := bsGetVia(t, s.Addr, "127.0.0.42", "hopy.example.test")
	if err != nil || !strings.Contains(body, "client=127.0.0.42 peer=('127.0.0.42', ") {
		t.Errorf("Go client through snilisten: %q, %v", body, err)
	}
	waitLog(t, s.Proc, "sni=hopy.example.test", "outcome=handoff")

	// A client announced by a trusted sender (root here).
	body, err = hoGet(t, sock, "127.0.0.43", "hopy.example.test", handoff.Message{SNI: "hopy.example.test", Client: netip.MustParseAddrPort("198.51.100.77:5555")})
	if err != nil || !strings.Contains(body, "client=198.51.100.77 peer=('198.51.100.77', 5555) local=('127.0.0.1', ") {
		t.Errorf("announced client: %q, %v", body, err)
	}
	// Behind a trusted front (-accept-proxy), snilisten announces the
	// client the front named, and python sees that client.
	front := startSnilisten(t, "-unix-directory", dir, "-accept-proxy", "127.0.0.46/32")
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 46)}}
	fc, err := d.Dial("tcp", front.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if _, err := fc.Write(bsHeader(t, 2, "192.0.2.88:6000", "192.0.2.1:443", "")); err != nil {
		t.Fatal(err)
	}
	if body, err := tlsGet(t, fc, "hopy.example.test"); err != nil || !strings.Contains(body, "client=192.0.2.88 peer=('192.0.2.88', 6000) local=('127.0.0.1', ") {
		t.Errorf("client announced by a front through snilisten: %q, %v", body, err)
	}
	for _, client := range []string{"127.0.0.41", "127.0.0.42", "198.51.100.77", "192.0.2.88"} {
		waitFor(t, 5*time.Second, "the access log line of "+client, func() bool {
			return strings.Contains(p.Output(), client+" - - [")
		})
	}
	if strings.Count(p.Output(), " - - [") != 4 {
		t.Errorf("python logged other requests than the four:\n%s", p.Output())
	}
}

// TestBindshimHandoffRestarts: a stale handoff socket is replaced, a live
// one refused, and -replace takes over while the old server finishes what
// it has.
func TestBindshimHandoffRestarts(t *testing.T) {
	dir := bsDir(t)
	sock := filepath.Join(dir, "hor.test")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)

	pidOf := func(body string) string {
		_, after, _ := strings.Cut(body, "pid=")
		return strings.TrimSpace(after)
	}
	get := func() string {
		t.Helper()
		body, err := hoGet(t, sock, "127.0.0.44", "hor.test", handoff.Message{SNI: "hor.test"})
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		return pidOf(body)
	}
	a := startPythonHandoff(t, dir, "hor.test")
	if got := get(); got != strconv.Itoa(a.Pid()) {
		t.Fatalf("over a stale socket: served by pid %q, want %d", got, a.Pid())
	}

	b := bsStart(t, "-d", dir, "-handoff", "hor.test", "--", "python3", "-c", "import socket; socket.create_server(('127.0.0.1', 443))")
	if err := b.Wait(t, 20*time.Second); err == nil || !strings.Contains(b.Output(), "listening there already") {
		t.Errorf("second server on a live handoff socket: %v\n%s", err, b.Output())
	}

	// In flight on A: handed over, TLS not begun. A (single-threaded)
	// is busy with it until it is done.
	inflight, s := hoPair(t, "127.0.0.45")
	if err := handoff.Send(sock, s, "hor.test"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The replacement takes the name when it listens: until then,
	// connections would queue behind the busy A.
	inode := func() uint64 {
		st, err := os.Stat(sock)
		if err != nil {
			return 0
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	old := inode()
	c := startPythonHandoff(t, dir, "hor.test", "-replace")
	waitFor(t, 15*time.Second, "the replacement to take the socket's name", func() bool { return inode() != old })
	for range 3 {
		if got := get(); got != strconv.Itoa(c.Pid()) {
			t.Errorf("after the handover: served by pid %q, want %d", got, c.Pid())
		}
	}
	body, err := tlsGet(t, inflight, "hor.test")
	if got := pidOf(body); err != nil || got != strconv.Itoa(a.Pid()) {
		t.Errorf("connection in flight during the handover: %q, %v; want pid %d", body, err, a.Pid())
	}
	if a.Exited() {
		t.Errorf("old server exited during the handover:\n%s", a.Output())
	}
	if m, _ := filepath.Glob(sock + "~*"); len(m) != 0 {
		t.Errorf("temporary sockets left behind: %v", m)
	}
}

// TestBindshimHandoffNginx: nginx (master and workers, non-blocking
// accept4) under bindshim -handoff for two names, and python under plain
// bindshim (PROXY header) for a third, in one directory behind one
// snilisten: each socket is used its own way, nginx logs the real
// clients, bad messages do not disturb it, and snilisten keeps nothing
// of a handed-off connection that is still open.
func TestBindshimHandoffNginx(t *testing.T) {
	need(t, "curl")
	dir := bsDir(t)
	a, b := "a.example.test", "b.example.test"
	p, tmp := startNginx(t, dir, a, b, "-handoff")
	startPython(t, dir, "py.example.test", freePort(t))
	s := startSnilisten(t, "-unix-directory", dir, "-proxy-proto")
	sport := s.Addr[strings.LastIndexByte(s.Addr, ':')+1:]
	baseline := socketCount(t, s.Pid())
	want := func(name, client string) string {
		return fmt.Sprintf("name=%s remote=%s server=127.0.0.1:%s\n", name, client, sport)
	}

	// A keep-alive connection, left open.
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 31)}}
	raw, err := d.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	kept := tls.Client(raw, testPKI(t).ClientConfig(a))
	br := bufio.NewReader(kept)
	ask := func() {
		t.Helper()
		fmt.Fprintf(kept, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", a)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("keep-alive request: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != want(a, "127.0.0.31") {
			t.Errorf("keep-alive request: %q, %v; want %q", body, err, want(a, "127.0.0.31"))
		}
	}
	ask()
	waitLog(t, s.Proc, "client=127.0.0.31:", "sni="+a, "outcome=handoff")
	// snilisten let go of it at once: its sockets are back at the
	// baseline while the connection lives on.
	waitFor(t, 5*time.Second, "snilisten's sockets back at the baseline", func() bool { return socketCount(t, s.Pid()) <= baseline })
	ask()

	if body, err := bsGetVia(t, s.Addr, "127.0.0.32", b); err != nil || body != want(b, "127.0.0.32") {
		t.Errorf("%s through snilisten: %q, %v; want %q", b, body, err, want(b, "127.0.0.32"))
	}
	pki := testPKI(t)
	curl := func(name, client string) string {
		t.Helper()
		out, err := exec.Command("curl", "-sS", "--max-time", "20", "--interface", client, "--cacert", pki.CAFile,
			"--resolve", name+":"+sport+":127.0.0.1", "https://"+name+":"+sport+"/").CombinedOutput()
		if err != nil {
			t.Errorf("curl %s from %s: %v\n%s", name, client, err, out)
		}
		return string(out)
	}
	if out := curl(a, "127.0.0.33"); out != want(a, "127.0.0.33") {
		t.Errorf("curl %s: %q, want %q", a, out, want(a, "127.0.0.33"))
	}
	// The stream socket beside them gets a PROXY header and a relay.
	if out := curl("py.example.test", "127.0.0.34"); !strings.Contains(out, "client=127.0.0.34 peer=('127.0.0.34', ") {
		t.Errorf("curl py.example.test: %q", out)
	}
	// (Relayed, not handed off; the outcome may be ok or, when curl's
	// close_notify meets python's close, a relay error.)
	waitLog(t, s.Proc, "sni=py.example.test", "backend="+filepath.Join(dir, "py.example.test"))
	for _, line := range strings.Split(s.Output(), "\n") {
		if strings.Contains(line, "sni=py.example.test") && (strings.Contains(line, "outcome=handoff") || strings.Contains(line, " down=0 ")) {
			t.Errorf("stream socket beside handoff sockets not relayed: %s", line)
		}
	}

	// Bad messages straight to nginx's socket are dropped; it serves on.
	sock := filepath.Join(dir, a)
	c1, f1, fd1 := hoCarry(t, "127.0.0.1", true)
	hoSend(t, sock, hoMessage(a))
	hoSend(t, sock, []byte("\x01\x00\xff\xff"), fd1)
	hoSend(t, sock, append([]byte{2}, hoMessage(a)[1:]...), fd1)
	f1.Close()
	hoClosed(t, c1, "bad message's connection")

	// Concurrent clients, each seen as itself.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client, name := fmt.Sprintf("127.0.0.%d", 100+i), []string{a, b}[i%2]
			if body, err := bsGetVia(t, s.Addr, client, name); err != nil || body != want(name, client) {
				t.Errorf("concurrent %s from %s: %q, %v", name, client, body, err)
			}
		}()
	}
	wg.Wait()
	ask()

	// nginx logs a request just after answering it.
	log := filepath.Join(tmp, "access.log")
	lines := func() int { return strings.Count(bsReadFile(t, log), "\n") }
	waitFor(t, 5*time.Second, "25 lines in the access log, one per request", func() bool { return lines() >= 3+1+1+20 })
	for _, line := range []string{"127.0.0.31 sni=" + a + " name=" + a, "127.0.0.32 sni=" + b + " name=" + b,
		"127.0.0.33 sni=" + a + " name=" + a, "127.0.0.119 sni=" + b + " name=" + b} {
		if !bsFileHas(log, line+"\n") {
			t.Errorf("access log has no line %q", line)
		}
	}
	if n := lines(); n != 25 {
		t.Errorf("access log has %d lines, want 25 (the requests made):\n%s", n, bsReadFile(t, log))
	}
	if p.Exited() {
		t.Errorf("nginx exited:\n%s", p.Output())
	}
}

func bsReadFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
