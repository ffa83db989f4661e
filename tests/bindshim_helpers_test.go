package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// bsDir makes a socket directory under /tmp (socket paths must stay under
// 108 bytes) that every uid may enter, so clients running as nobody can
// reach sockets whose mode lets them.
func bsDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "bsh-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// bsStart runs bin/bindshim with args (flags, host, "--", command...).
func bsStart(t testing.TB, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin(t, "bindshim"), args...)
	cmd.Env = append(os.Environ(), "BINDSHIM_LIBRARY="+bin(t, "libbindshim.so"))
	return start(t, cmd)
}

// bsWaitSocket waits until something accepts connections on the UNIX
// socket at path, a stream or (bindshim -handoff) a SOCK_SEQPACKET one.
// The probe sends nothing, so a bindshim server drops it.
func bsWaitSocket(t testing.TB, p *Proc, path string) {
	t.Helper()
	waitFor(t, 15*time.Second, "a listener on "+path, func() bool {
		if p != nil && p.Exited() {
			t.Fatalf("server exited before listening on %s:\n%s", path, p.Output())
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if errors.Is(err, syscall.EPROTOTYPE) {
			c, err = net.DialTimeout("unixpacket", path, time.Second)
		}
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// bsHeader is a PROXY header of version ver (1 or 2) from src to dst, with
// the server name in an authority TLV on v2, as snilisten writes it.
func bsHeader(t testing.TB, ver byte, src, dst, sni string) []byte {
	t.Helper()
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	h := proxyproto.HeaderProxyFromAddrs(ver, net.TCPAddrFromAddrPort(s), net.TCPAddrFromAddrPort(d))
	if ver == 2 && sni != "" {
		if err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(sni)}}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := h.Format()
	if err != nil {
		t.Fatalf("format PROXY header %s -> %s: %v", src, dst, err)
	}
	return b
}

// bsExchange connects to the UNIX socket at path, writes payload, shuts
// down its side, and returns everything read until the server closes (or
// 10s pass).
func bsExchange(t testing.TB, path string, payload []byte) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return "", err
	}
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

// bsGet does what snilisten does for one client: connect to the socket
// at path, send the PROXY header, then speak TLS with the server name sni
// and make one HTTP/1.0 request for /. It returns the whole response.
func bsGet(t testing.TB, path string, header []byte, sni string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(header); err != nil {
		return "", fmt.Errorf("write header: %w", err)
	}
	tc := tls.Client(c, testPKI(t).ClientConfig(sni))
	if err := tc.Handshake(); err != nil {
		return "", fmt.Errorf("handshake: %w", err)
	}
	if _, err := fmt.Fprintf(tc, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", sni); err != nil {
		return "", err
	}
	b, err := io.ReadAll(tc)
	if len(b) > 0 {
		err = nil // servers that close without close_notify
	}
	return string(b), err
}

// bsGetVia makes one HTTP/1.0 request for / over TLS with the server name
// sni to a TCP address (snilisten), from the local address local, and
// returns the response body.
func bsGetVia(t testing.TB, addr, local, sni string) (string, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return tlsGet(t, c, sni)
}

// bsAsNobody runs a command as uid and gid 65534 with stdin and returns
// its output.
func bsAsNobody(t testing.TB, stdin []byte, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// bsNeedRoot skips a test that must act as root (other uids, namespaces).
func bsNeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (to run clients as another uid and servers as root)")
	}
}

// bsWriteFile writes a file into dir and returns its path.
func bsWriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// bsFileHas reports whether the file at path contains s.
func bsFileHas(path, s string) bool {
	b, _ := os.ReadFile(path)
	return strings.Contains(string(b), s)
}

// bsProbe drives the C program of probeSource under bindshim: one command
// in, one line out.
type bsProbe struct {
	t     testing.TB
	p     *Proc
	stdin io.WriteCloser
	lines int
}

// bsStartProbe compiles probeSource and runs it under bindshim with args
// (flags and host), the probe binding TCP port.
func bsStartProbe(t testing.TB, port int, args ...string) *bsProbe {
	t.Helper()
	need(t, "cc")
	tmp := t.TempDir()
	src := bsWriteFile(t, tmp, "probe.c", probeSource)
	exe := filepath.Join(tmp, "probe")
	if out, err := exec.Command("cc", "-std=c99", "-Wall", "-o", exe, src).CombinedOutput(); err != nil {
		t.Fatalf("cc probe.c: %v\n%s", err, out)
	}
	args = append(append([]string(nil), args...), "--", exe, strconv.Itoa(port))
	cmd := exec.Command(bin(t, "bindshim"), args...)
	cmd.Env = append(os.Environ(), "BINDSHIM_LIBRARY="+bin(t, "libbindshim.so"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr := &bsProbe{t: t, stdin: stdin}
	pr.p = start(t, cmd)
	t.Cleanup(func() { stdin.Close() })
	return pr
}

// do sends one command (none if empty) and returns the line it printed.
func (pr *bsProbe) do(command string) string {
	pr.t.Helper()
	if command != "" {
		fmt.Fprintln(pr.stdin, command)
	}
	pr.lines++
	var line string
	waitFor(pr.t, 10*time.Second, "the probe to answer "+command, func() bool {
		all := strings.Split(pr.p.Output(), "\n")
		if len(all) > pr.lines {
			line = all[pr.lines-1]
			return true
		}
		return pr.p.Exited()
	})
	return line
}

// expect runs command and checks that its line contains each of want.
func (pr *bsProbe) expect(command string, want ...string) string {
	pr.t.Helper()
	got := pr.do(command)
	for _, w := range want {
		if !strings.Contains(got, w) {
			pr.t.Errorf("%s: %q, want %q", command, got, w)
		}
	}
	return got
}

// bsProbeFD is the descriptor number in a probe's "r=N" answer.
func bsProbeFD(line string) string {
	_, after, _ := strings.Cut(line, "r=")
	if f := strings.Fields(after); len(f) > 0 {
		return f[0]
	}
	return "-1"
}

// bsEnvWithout is env without the variable name, such as BINDSHIM_LIBRARY
// for a command that must run without the preload.
func bsEnvWithout(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// pythonServer is python3's own http.server with an ssl context: an
// unmodified TCP server. Its reply shows what the socket calls say (the
// accepted address, getpeername, getsockname, and its pid); its access
// log on stderr shows the client address as usual.
const pythonServer = `import http.server, os, socket, ssl, sys
port, host, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("client=%s peer=%s local=%s pid=%d\n" % (self.client_address[0],
            self.connection.getpeername()[:2], self.connection.getsockname()[:2], os.getpid())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Server(http.server.HTTPServer):
    address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

srv = Server((host, port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("serving", srv.server_address[:2], flush=True)
srv.serve_forever()
`

// startPython runs pythonServer under bindshim as host, binding port on
// 127.0.0.1 (so that, were the bind not moved, it would stay on loopback).
func startPython(t *testing.T, dir, host string, port int, flags ...string) *Proc {
	t.Helper()
	need(t, "python3")
	pki := testPKI(t)
	script := bsWriteFile(t, t.TempDir(), "server.py", pythonServer)
	args := append([]string{"-d", dir, "-p", strconv.Itoa(port)}, flags...)
	args = append(args, host, "--", "python3", script, strconv.Itoa(port), "127.0.0.1", pki.CertFile, pki.KeyFile)
	p := bsStart(t, args...)
	bsWaitSocket(t, p, filepath.Join(dir, host))
	return p
}

// nginxWorkers lists the worker processes of an nginx master.
func nginxWorkers(master int) map[string]bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
	w := map[string]bool{}
	for _, pid := range strings.Fields(string(b)) {
		w[pid] = true
	}
	return w
}

// startNginx runs nginx (nginxConf, for the names a and b) under bindshim
// with flags, as a and alias b, in a network namespace of its own: nginx
// binds port 443 on every address, and so nothing ever listens beyond the
// test, even if the bind were not moved. It returns nginx's process (the
// master) and its directory, which holds access.log.
func startNginx(t *testing.T, dir, a, b string, flags ...string) (*Proc, string) {
	t.Helper()
	bsNeedRoot(t)
	need(t, "nginx", "unshare")
	if err := exec.Command("unshare", "-n", "true").Run(); err != nil {
		t.Skipf("unshare -n: %v", err)
	}
	tmp := t.TempDir()
	pki := testPKI(t)
	conf := strings.NewReplacer("{{T}}", tmp, "{{CERT}}", pki.CertFile, "{{KEY}}", pki.KeyFile,
		"a.test", a, "b.test", b).Replace(nginxConf)
	bsWriteFile(t, tmp, "nginx.conf", conf)
	args := append([]string{"-n", bin(t, "bindshim")}, flags...)
	args = append(args, "-d", dir, a, "-alias", b, "--",
		"nginx", "-p", tmp, "-c", filepath.Join(tmp, "nginx.conf"), "-e", filepath.Join(tmp, "error.log"),
		"-g", "daemon off; pid "+filepath.Join(tmp, "nginx.pid")+";")
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), "BINDSHIM_LIBRARY="+bin(t, "libbindshim.so"))
	// Workers outliving a killed master would hold the output pipe.
	cmd.WaitDelay = 5 * time.Second
	p := start(t, cmd)
	t.Cleanup(func() {
		// Stop nginx the way it likes, so no worker is left behind.
		workers := nginxWorkers(p.Pid())
		p.Cmd.Process.Signal(syscall.SIGTERM)
		deadline := time.Now().Add(10 * time.Second)
		for !p.Exited() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		for pid := range workers {
			if n, err := strconv.Atoi(pid); err == nil {
				syscall.Kill(n, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(tmp, "error.log"))
			t.Logf("nginx error.log:\n%s", b)
		}
	})
	bsWaitSocket(t, p, filepath.Join(dir, a))
	if target, err := os.Readlink(filepath.Join(dir, b)); err != nil || target != a {
		t.Fatalf("alias %s: %q, %v", b, target, err)
	}
	return p, tmp
}

// probeSource is a small TCP server in C that does, on each command read
// from stdin, one socket call on the descriptors it holds and prints what
// the call returned: it pins the library's contract at the level of
// system calls (flags kept, EAGAIN, addrlen truncation, dup and close).
// "acceptf len flags" prints the returned descriptor's O_NONBLOCK and
// FD_CLOEXEC first; flags -1 calls accept() rather than accept4(). "full"
// lowers RLIMIT_NOFILE to leave one descriptor free, "unlimit" undoes it.
const probeSource = `#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static void show(const char *what, int r, unsigned char *buf, socklen_t len, socklen_t cap)
{
	char text[64] = "-";
	socklen_t i;
	int family = len >= 2 ? ((struct sockaddr *)buf)->sa_family : -1;

	if (r < 0) {
		printf("%s err=%s\n", what, strerror(errno));
		return;
	}
	if (len >= sizeof(struct sockaddr_in) && family == AF_INET && cap >= sizeof(struct sockaddr_in))
		snprintf(text, sizeof text, "%s:%d", inet_ntoa(((struct sockaddr_in *)buf)->sin_addr),
		         ntohs(((struct sockaddr_in *)buf)->sin_port));
	printf("%s r=%d len=%u family=%d addr=%s bytes=", what, r, (unsigned)len, family, text);
	for (i = 0; i < 32; i++)
		printf("%02x", buf[i]);
	printf("\n");
}

int main(int argc, char **argv)
{
	struct sockaddr_in sin;
	unsigned char buf[64];
	socklen_t len;
	char line[128];
	int s, one = 1, v, r, fd, n;

	struct rlimit rl;

	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons(atoi(argv[1]));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(s, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(s, 16) != 0) {
		printf("bind err=%s\n", strerror(errno));
		return 1;
	}
	printf("listening fd=%d nonblock=%d cloexec=%d nofile=%lu\n", s, !!(fcntl(s, F_GETFL) & O_NONBLOCK),
	       !!(fcntl(s, F_GETFD) & FD_CLOEXEC), (unsigned long)rl.rlim_cur);
	fflush(stdout);
	while (fgets(line, sizeof line, stdin) != NULL) {
		memset(buf, 0xaa, sizeof buf);
		if (sscanf(line, "accept %d", &n) == 1) {
			struct pollfd p = {s, POLLIN, 0};
			poll(&p, 1, 5000);
			len = n;
			r = accept4(s, (struct sockaddr *)buf, &len, SOCK_CLOEXEC);
			show("accept", r, buf, len, n);
		} else if (sscanf(line, "acceptf %d %d", &n, &v) == 2) {
			/* flags -1: accept(); else accept4 with those flags. */
			struct pollfd p = {s, POLLIN, 0};
			poll(&p, 1, 5000);
			len = n;
			r = v < 0 ? accept(s, (struct sockaddr *)buf, &len) : accept4(s, (struct sockaddr *)buf, &len, v);
			if (r >= 0)
				printf("nonblock=%d cloexec=%d ", !!(fcntl(r, F_GETFL) & O_NONBLOCK), !!(fcntl(r, F_GETFD) & FD_CLOEXEC));
			show("accept", r, buf, len, n);
		} else if (strncmp(line, "full", 4) == 0) {
			/* Leave one descriptor free, the lowest. */
			fd = dup(0);
			close(fd);
			rl.rlim_cur = fd + 1;
			printf("full r=%d lowest=%d\n", setrlimit(RLIMIT_NOFILE, &rl), fd);
		} else if (strncmp(line, "unlimit", 7) == 0) {
			rl.rlim_cur = rl.rlim_max;
			printf("unlimit r=%d\n", setrlimit(RLIMIT_NOFILE, &rl));
		} else if (sscanf(line, "peer %d %d", &fd, &n) == 2) {
			len = n;
			r = getpeername(fd, (struct sockaddr *)buf, &len);
			show("peer", r, buf, len, n);
		} else if (sscanf(line, "name %d %d", &fd, &n) == 2) {
			len = n;
			r = getsockname(fd, (struct sockaddr *)buf, &len);
			show("name", r, buf, len, n);
		} else if (sscanf(line, "opt %d", &fd) == 1) {
			int nodelay = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			int v6only = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
			int type = -1;
			len = sizeof v;
			r = getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len);
			len = sizeof type;
			getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
			printf("opt nodelay=%d v6only=%d domain=%d type=%d\n", nodelay, v6only, r == 0 ? v : -1, type);
		} else if (sscanf(line, "dup2 %d %d", &fd, &n) == 2) {
			printf("dup2 r=%d\n", dup2(fd, n));
		} else if (sscanf(line, "dup %d", &fd) == 1) {
			printf("dup r=%d\n", dup(fd));
		} else if (sscanf(line, "close %d", &fd) == 1) {
			printf("close r=%d\n", close(fd));
		} else if (sscanf(line, "read %d", &fd) == 1) {
			r = read(fd, buf, sizeof buf - 1);
			buf[r > 0 ? r : 0] = 0;
			buf[strcspn((char *)buf, "\n")] = 0;
			printf("read r=%d data=%s\n", r, buf);
		}
		fflush(stdout);
	}
	return 0;
}
`

// startPythonHandoff runs pythonServer under bindshim -handoff.
func startPythonHandoff(t *testing.T, dir, host string, flags ...string) *Proc {
	t.Helper()
	return startPython(t, dir, host, freePort(t), append([]string{"-handoff"}, flags...)...)
}
