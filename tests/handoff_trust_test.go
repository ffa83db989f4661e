package tests

// Issue 21, part 1: who may hand a connection to a server. Each test plays
// a local user who should not be able to: uid 65534, outside the socket's
// group, or a member of it who is not a trusted sender.

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/handoff"
)

// nobodyPython is python3 from the system: a pyenv shim under /root is
// out of reach of other uids.
const nobodyPython = "/usr/bin/python3"

// trustAttacker is run as an untrusted local user. "scan HOST" finds every
// listening UNIX socket in /proc/net/unix (abstract or not), connects to
// each, and on a SOCK_SEQPACKET one hands over a TCP connection it made
// itself from 198.51.100.7, then asks for / over TLS as HOST and prints
// the answer. "send PATH HOST" does the same to the socket at PATH only.
// "idle PATH N" opens N SOCK_SEQPACKET connections to PATH that say
// nothing, prints "idle N", and holds them until its input ends.
const trustAttacker = `import socket, ssl, sys

def handoff(u, host, src):
    ln = socket.create_server((src, 0))
    c = socket.create_connection(ln.getsockname(), source_address=(src, 0))
    s, _ = ln.accept()
    try:
        socket.send_fds(u, [bytes([1, 0, 0, len(host)]) + host.encode() + b"\0"], [s.fileno()])
    except OSError as e:
        print("not sent:", e, flush=True)
    s.close(); u.close(); ln.close()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.settimeout(10)
    try:
        t = ctx.wrap_socket(c, server_hostname=host)
        t.sendall(("GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % host).encode())
        print("answer:", t.recv(4096).decode(errors="replace").split("\r\n\r\n")[-1].strip(), flush=True)
    except (OSError, ValueError) as e:
        print("no reply:", e, flush=True)

cmd = sys.argv[1]
if cmd == "scan":
    host, found, reached = sys.argv[2], 0, 0
    for line in open("/proc/net/unix").read().splitlines()[1:]:
        f = line.split()
        if len(f) < 8 or f[5] != "01" or int(f[3], 16) & 0x10000 == 0:
            continue
        found += 1
        path, typ = f[7], int(f[4], 16)
        u = socket.socket(socket.AF_UNIX, typ)
        try:
            u.connect("\0" + path[1:] if path.startswith("@") else path)
        except OSError as e:
            print("refused", path, e.strerror, flush=True)
            continue
        reached += 1
        print("connected", path, flush=True)
        if typ == socket.SOCK_SEQPACKET:
            handoff(u, host, "198.51.100.7")
    print("found", found, "reached", reached, flush=True)
elif cmd == "send":
    u = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    u.connect(sys.argv[2])
    handoff(u, sys.argv[3], "127.0.0.77")
elif cmd == "idle":
    held = []
    for i in range(int(sys.argv[3])):
        u = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        u.connect(sys.argv[2])
        held.append(u)
    print("idle", len(held), flush=True)
    sys.stdin.read()
`

// trustScript writes trustAttacker where every uid can read it.
func trustScript(t *testing.T) string {
	t.Helper()
	needSystemPython(t)
	dir := bsDir(t)
	p := bsWriteFile(t, dir, "attacker.py", trustAttacker)
	return p
}

// needSystemPython skips a test that runs python3 as another uid when
// there is no nobodyPython.
func needSystemPython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(nobodyPython); err != nil {
		t.Skipf("python3 for other uids: %v", err)
	}
}

// asNobody runs python3 with the attacker script as uid and gid 65534 and
// no other group, in the network namespace of process ns if ns > 0.
func asNobody(t *testing.T, ns int, script string, args ...string) (string, error) {
	t.Helper()
	need(t, "setpriv")
	all := []string{"--reuid=65534", "--regid=65534", "--clear-groups", nobodyPython, script}
	all = append(all, args...)
	cmd := exec.Command("setpriv", all...)
	if ns > 0 {
		cmd = exec.Command("nsenter", append([]string{"-t", strconv.Itoa(ns), "-n", "setpriv"}, all...)...)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
		}
	}()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// holdIdle opens n idle SOCK_SEQPACKET connections to path as uid 65534
// and returns once they are all queued; they are held until the test
// ends.
func holdIdle(t *testing.T, script, path string, n int) *Proc {
	t.Helper()
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", nobodyPython, script, "idle", path, strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, cmd)
	t.Cleanup(func() { stdin.Close() })
	want := fmt.Sprintf("idle %d\n", n)
	waitFor(t, 20*time.Second, "uid 65534 to hold "+want, func() bool { return strings.Contains(p.Output(), want) || p.Exited() })
	if p.Exited() {
		t.Fatalf("idle connections as uid 65534: %s", p.Output())
	}
	return p
}

// TestHandoffTrustSecondListener: nginx with "listen 443; listen
// [::]:443;" under bindshim binds twice. The second descriptor must hold
// a socket that no local user can connect to: a user outside the group,
// scanning /proc/net/unix in nginx's network namespace, reaches nothing,
// so cannot hand nginx a connection from an address of their choosing.
func TestHandoffTrustSecondListener(t *testing.T) {
	bsNeedRoot(t)
	need(t, "ip", "nsenter", "setpriv")
	script := trustScript(t)
	for _, mode := range []string{"handoff", "proxy"} {
		t.Run(mode, func(t *testing.T) {
			dir := bsDir(t)
			a, b := "trusta.example.test", "trustb.example.test"
			flag := "-handoff"
			if mode == "proxy" {
				flag = "-header-timeout=1s" // PROXY headers, the default
			}
			p, tmp := startNginx(t, dir, a, b, flag)
			ns := strconv.Itoa(p.Pid())
			for _, args := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", "198.51.100.7/32", "dev", "lo"}} {
				if out, err := exec.Command("nsenter", append([]string{"-t", ns, "-n", "ip"}, args...)...).CombinedOutput(); err != nil {
					t.Fatalf("ip %v in nginx's namespace: %v\n%s", args, err, out)
				}
			}
			out, err := asNobody(t, p.Pid(), script, "scan", a)
			t.Logf("uid 65534 scanning nginx's UNIX sockets:\n%s", out)
			if err != nil || !strings.Contains(out, "found 2 reached 0\n") {
				t.Errorf("uid 65534 outside the group: %v; want nginx's two listening sockets found and neither reached", err)
			}
			if strings.Contains(out, "answer:") || bsFileHas(filepath.Join(tmp, "access.log"), "198.51.100.7") {
				t.Errorf("nginx served a connection handed over by uid 65534")
			}
			// nginx still serves a real handoff (root) on the socket.
			if mode == "handoff" {
				body, err := hoGet(t, filepath.Join(dir, a), "127.0.0.61", a, handoff.Message{SNI: a})
				if err != nil || !strings.HasPrefix(body, "name="+a+" remote=127.0.0.61 ") {
					t.Errorf("real handoff after the scan: %q, %v", body, err)
				}
			}
		})
	}
}

// TestHandoffTrustUntrustedSender: bindshim -handoff with a socket every
// uid may connect to (-m 0666). An untrusted sender's message is dropped
// even when it announces no client address, and untrusted connections
// that say nothing do not hold the accept loop: with -header-timeout at
// ten minutes, a real handoff behind four of them (python's backlog is
// five) is served at once.
func TestHandoffTrustUntrustedSender(t *testing.T) {
	bsNeedRoot(t)
	need(t, "setpriv")
	script := trustScript(t)
	dir := bsDir(t)
	host := "untrusted.test"
	sock := filepath.Join(dir, host)
	p := startPythonHandoff(t, dir, host, "-m", "0666", "-header-timeout", "10m")

	out, err := asNobody(t, 0, script, "send", sock, host)
	if err != nil || strings.Contains(out, "answer:") {
		t.Errorf("handoff from uid 65534 (no client address announced): %v %q; want it dropped", err, out)
	}
	holdIdle(t, script, sock, 4)
	body, err := hoGet(t, sock, "127.0.0.62", host, handoff.Message{SNI: host})
	if err != nil || !strings.Contains(body, "client=127.0.0.62 ") {
		t.Errorf("real handoff behind 4 idle untrusted connections: %q, %v", body, err)
	}
	if strings.Contains(p.Output(), "127.0.0.77") {
		t.Errorf("python served uid 65534's connection:\n%s", p.Output())
	}
	// With -trust-uid 65534, the same sender is served.
	dir2 := bsDir(t)
	startPythonHandoff(t, dir2, host, "-m", "0666", "-trust-uid", "65534")
	if out, err := asNobody(t, 0, script, "send", filepath.Join(dir2, host), host); err != nil || !strings.Contains(out, "answer:") {
		t.Errorf("handoff from uid 65534 with -trust-uid 65534: %v %q; want it served", err, out)
	}
}

// TestHandoffTrustGoListener is the same for lib/handoff's Listener (a Go
// server): an untrusted sender is dropped before anything is read, so
// forty idle connections (a second each, before) do not delay a real
// handoff, and an untrusted message without a client address is dropped.
func TestHandoffTrustGoListener(t *testing.T) {
	bsNeedRoot(t)
	need(t, "setpriv")
	script := trustScript(t)
	dir := bsDir(t)
	host := "golistener.test"
	sock := filepath.Join(dir, host)
	handoffHTTPS(t, dir, host)
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	out, err := asNobody(t, 0, script, "send", sock, host)
	if err != nil || strings.Contains(out, "answer:") {
		t.Errorf("handoff from uid 65534 (no client address announced): %v %q; want it dropped", err, out)
	}
	holdIdle(t, script, sock, 40)
	body, err := hoGet(t, sock, "127.0.0.63", host, handoff.Message{SNI: host})
	if err != nil || !strings.Contains(body, "mode=handoff") {
		t.Errorf("real handoff behind 40 idle untrusted connections: %q, %v", body, err)
	}
	// A client announced by a trusted sender (root) still counts.
	body, err = hoGet(t, sock, "127.0.0.64", host, handoff.Message{SNI: host, Client: netip.MustParseAddrPort("198.51.100.9:4000")})
	if err != nil || !strings.Contains(body, "198.51.100.9") {
		t.Errorf("announced client from root: %q, %v", body, err)
	}
}

// blockingServer is an unmodified server with a blocking listener that it
// polls before accepting, as servers with several listeners in one thread
// do (python's socketserver among them): each accept's outcome is a line.
const blockingServer = `import select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
while True:
    select.select([s], [], [])
    try:
        c, a = s.accept()
    except OSError as e:
        print("accept error", e.errno, flush=True)
        continue
    print("accepted", a[0], flush=True)
    c.close()
`

// TestBindshimBlockingAcceptAborts: when bindshim drops the connection a
// poll announced, a blocking accept returns ECONNABORTED instead of
// waiting for the next one (which may never come, while the server's
// other work waits), in both modes. A blocking accept the program did not
// poll for waits on, as the kernel's: openssl s_server exits on
// ECONNABORTED (TestBindshimOpenSSL), socat on EAGAIN (TestBindshimTrust).
func TestBindshimBlockingAcceptAborts(t *testing.T) {
	need(t, "python3")
	script := bsWriteFile(t, t.TempDir(), "blocking.py", blockingServer)
	for _, mode := range []string{"proxy", "handoff"} {
		t.Run(mode, func(t *testing.T) {
			dir := bsDir(t)
			port := strconv.Itoa(freePort(t))
			args := []string{"-d", dir, "-p", port}
			if mode == "handoff" {
				args = append(args, "-handoff")
			}
			p := bsStart(t, append(args, "blocking.test", "--", "python3", script, port)...)
			sock := filepath.Join(dir, "blocking.test")
			waitFor(t, 15*time.Second, "python to listen", func() bool { return strings.Contains(p.Output(), "listening\n") || p.Exited() })
			lines := func() []string { return strings.Split(strings.TrimSpace(p.Output()), "\n") }

			// A bad connection: garbage for a PROXY header, or a sender
			// that closes without a message. Then a good one.
			if mode == "proxy" {
				if _, err := bsExchange(t, sock, []byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
					t.Logf("bad connection: %v", err)
				}
				if _, err := bsExchange(t, sock, bsHeader(t, 2, "127.0.0.71:1000", "192.0.2.1:443", "")); err != nil {
					t.Fatal(err)
				}
			} else {
				hoSend(t, sock, nil)
				c, f, fd := hoCarry(t, "127.0.0.71", false)
				_ = c
				hoSend(t, sock, hoMessage("blocking.test"), fd)
				f.Close()
			}
			waitFor(t, 20*time.Second, "python to accept the good connection", func() bool {
				return strings.Contains(p.Output(), "accepted 127.0.0.71\n") || p.Exited()
			})
			got := lines()
			want := []string{"listening", fmt.Sprintf("accept error %d", syscall.ECONNABORTED), "accepted 127.0.0.71"}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("python's accepts: %q, want %q", got, want)
			}
		})
	}
}

// TestBindshimTempNamesUnpredictable: in a shared socket directory (mode
// 3770, as /var/tls), a group member who guesses the temporary name of
// another site's -replace socket or -alias link, and puts something there
// first, must not make that site's restart fail. The attacker uses the
// server's pid, the name before this change.
func TestBindshimTempNamesUnpredictable(t *testing.T) {
	bsNeedRoot(t)
	need(t, "setpriv", "sh")
	needSystemPython(t)
	const group, server = "4242", "1001"
	dir := bsDir(t)
	if err := os.Chown(dir, 0, 4242); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o770|os.ModeSetgid|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	script := bsWriteFile(t, bsDir(t), "pid.py", `import os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
print("listening", flush=True)
while True:
    try:
        c, a = s.accept()
    except OSError:
        continue
    c.sendall(b"pid=%d\n" % os.getpid()); c.close()
`)
	// run starts bindshim as the server's uid after the attacker (uid
	// 65534, in the group) made a symbolic link at prefix~PID, PID being
	// the shell's, which bindshim and python inherit through exec.
	run := func(prefix string, args ...string) *Proc {
		t.Helper()
		port := strconv.Itoa(freePort(t))
		sh := `setpriv --reuid=65534 --regid=65534 --groups=` + group + ` ln -s nowhere "$0~$$" || exit 9
exec setpriv --reuid=` + server + ` --regid=` + group + ` --groups=` + group + ` "$@"`
		all := append([]string{"-c", sh, prefix, bin(t, "bindshim"), "-d", dir, "-p", port}, args...)
		all = append(all, "--", nobodyPython, script, port)
		cmd := exec.Command("sh", all...)
		cmd.Env = append(os.Environ(), "BINDSHIM_LIBRARY="+bin(t, "libbindshim.so"))
		p := start(t, cmd)
		waitFor(t, 15*time.Second, "the server to listen or exit", func() bool { return strings.Contains(p.Output(), "listening") || p.Exited() })
		return p
	}
	pidAt := func(path string) string {
		t.Helper()
		out, err := bsExchange(t, path, bsHeader(t, 2, "192.0.2.72:1000", "192.0.2.1:443", ""))
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(out)
	}

	host := filepath.Join(dir, "site.test")
	a := run(filepath.Join(dir, "unused"), "site.test")
	if got := pidAt(host); got != fmt.Sprintf("pid=%d", a.Pid()) {
		t.Fatalf("first server: %q\n%s", got, a.Output())
	}
	b := run(host, "-replace", "site.test")
	if got := pidAt(host); got != fmt.Sprintf("pid=%d", b.Pid()) {
		t.Errorf("restart with -replace after uid 65534 took %s~%d: %q, want pid=%d\n%s", host, b.Pid(), got, b.Pid(), b.Output())
	}

	alias := filepath.Join(dir, "alias.test")
	// A dangling alias the site's own user left behind.
	if err := os.Symlink("gone.test", alias); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(alias, 1001, 4242); err != nil {
		t.Fatal(err)
	}
	c := run(alias, "other.test", "-alias", "alias.test")
	if target, err := os.Readlink(alias); err != nil || target != "other.test" || c.Exited() {
		t.Errorf("alias after uid 65534 took %s~%d: points to %q (%v), server exited %v\n%s", alias, c.Pid(), target, err, c.Exited(), c.Output())
	}
	if got := pidAt(alias); got != fmt.Sprintf("pid=%d", c.Pid()) {
		t.Errorf("through the alias: %q, want pid=%d", got, c.Pid())
	}
	// Only the attacker's links are left beside the sockets.
	m, _ := filepath.Glob(filepath.Join(dir, "*~*"))
	for _, f := range m {
		if fi, err := os.Lstat(f); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("temporary file left behind: %s", f)
		}
	}
}
