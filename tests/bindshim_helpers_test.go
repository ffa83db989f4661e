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
	c.SetDeadline(time.Now().Add(15 * time.Second))
	tc := tls.Client(c, testPKI(t).ClientConfig(sni))
	if _, err := fmt.Fprintf(tc, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", sni); err != nil {
		return "", err
	}
	b, err := io.ReadAll(tc)
	if len(b) > 0 {
		err = nil
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return body, err
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
