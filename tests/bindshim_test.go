package tests

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestBindshimPython(t *testing.T) {
	dir := bsDir(t)
	port := freePort(t)
	p := startPython(t, dir, "py.test", port, "-m", "0640", "-g", "65534")
	sock := filepath.Join(dir, "py.test")

	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o640 || st.Sys().(*syscall.Stat_t).Gid != 65534 {
		t.Errorf("socket %s: mode %v gid %d, want a socket 0640 gid 65534", sock, st.Mode(), st.Sys().(*syscall.Stat_t).Gid)
	}
	// getsockname on the listener is the TCP address python asked for.
	waitFor(t, 5*time.Second, "python to report its address", func() bool {
		return strings.Contains(p.Output(), fmt.Sprintf("serving ('127.0.0.1', %d)", port))
	})
	// Nothing listens on the TCP port: the bind went to the socket.
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on TCP port %d", port)
	}

	for _, c := range []struct {
		ver      byte
		src, dst string
		want     string
	}{
		{2, "203.0.113.7:40001", "192.0.2.1:443", "client=203.0.113.7 peer=('203.0.113.7', 40001) local=('192.0.2.1', 443)"},
		{1, "198.51.100.9:40002", "192.0.2.2:8443", "client=198.51.100.9 peer=('198.51.100.9', 40002) local=('192.0.2.2', 8443)"},
		// An IPv4 client in a TCP6 header reaches an IPv4 server as IPv4.
		{1, "[::ffff:198.51.100.10]:40003", "[::ffff:192.0.2.1]:443", "client=198.51.100.10 peer=('198.51.100.10', 40003)"},
	} {
		resp, err := bsGet(t, sock, bsHeader(t, c.ver, c.src, c.dst, "py.test"), "py.test")
		if err != nil {
			t.Fatalf("v%d from %s: %v", c.ver, c.src, err)
		}
		if !strings.HasPrefix(resp, "HTTP/1.0 200") || !strings.Contains(resp, c.want) {
			t.Errorf("v%d from %s: got %q, want %q", c.ver, c.src, resp, c.want)
		}
		client := c.want[len("client="):strings.IndexByte(c.want, ' ')]
		waitFor(t, 5*time.Second, "the access log line of "+client, func() bool {
			return strings.Contains(p.Output(), client+" - - [")
		})
	}
}

func TestBindshimPythonBehindSnilisten(t *testing.T) {
	need(t, "curl")
	snil := filepath.Join("..", "bin", "snilisten")
	if _, err := os.Stat(snil); err != nil {
		t.Skip("bin/snilisten not built")
	}
	dir := bsDir(t)
	p := startPython(t, dir, "web.example.test", freePort(t))
	pki := testPKI(t)
	for i, proto := range []string{"-proxy-proto", "-proxy-proto=v1"} {
		sp := freePort(t)
		start(t, exec.Command(bin(t, "snilisten"), "-listen", fmt.Sprintf("tcp:127.0.0.1:%d", sp),
			"-mode", "unix", "-unix-directory", dir, proto))
		waitListening(t, fmt.Sprintf("127.0.0.1:%d", sp))
		// curl from its own loopback address, so the log cannot show it
		// by accident.
		client := fmt.Sprintf("127.0.0.%d", 5+i)
		out, err := exec.Command("curl", "-sS", "--max-time", "20", "--interface", client, "--cacert", pki.CAFile,
			"--resolve", fmt.Sprintf("web.example.test:%d:127.0.0.1", sp), fmt.Sprintf("https://web.example.test:%d/", sp)).CombinedOutput()
		if err != nil {
			t.Fatalf("curl through snilisten %s: %v\n%s", proto, err, out)
		}
		want := fmt.Sprintf("client=%s peer=('%s', ", client, client)
		if !strings.Contains(string(out), want) || !strings.Contains(string(out), fmt.Sprintf("local=('127.0.0.1', %d)", sp)) {
			t.Errorf("through snilisten %s: got %q, want %q and snilisten's address", proto, out, want)
		}
		waitFor(t, 5*time.Second, "the access log line of "+client, func() bool {
			return strings.Contains(p.Output(), client+" - - [")
		})
	}
}

// socatServer is an unmodified TCP server that answers each connection
// with the peer address accept() gave it, and logs that address. (socat
// reads ':' and ',' in the command as its own syntax.)
func socatServer(t *testing.T, dir, host string, port int, log string, flags ...string) *Proc {
	t.Helper()
	need(t, "socat")
	args := append([]string{"-d", dir, "-p", strconv.Itoa(port)}, flags...)
	args = append(args, host, "--", "socat", fmt.Sprintf("TCP4-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", port),
		"SYSTEM:echo peer=$SOCAT_PEERADDR port=$SOCAT_PEERPORT; echo $SOCAT_PEERADDR >> "+log)
	p := bsStart(t, args...)
	bsWaitSocket(t, p, filepath.Join(dir, host))
	return p
}

func TestBindshimTrust(t *testing.T) {
	bsNeedRoot(t)
	need(t, "socat")
	dir := bsDir(t)
	port := freePort(t)
	log := filepath.Join(t.TempDir(), "peers.log")
	socatServer(t, dir, "trust.test", port, log, "-m", "0666", "-header-timeout", "2s")
	sock := filepath.Join(dir, "trust.test")
	header := func(ver byte, src string) []byte { return bsHeader(t, ver, src+":4000", "192.0.2.1:443", "trust.test") }
	good := func(src string) {
		t.Helper()
		out, err := bsExchange(t, sock, header(2, src))
		if want := "peer=" + src + " port=4000\n"; err != nil || out != want {
			t.Fatalf("trusted client from %s: %q, %v; want %q", src, out, err, want)
		}
	}
	// Dropped: closed unanswered, with a reset when bytes were left unread.
	dropped := func(what, out string, err error) {
		t.Helper()
		if (err != nil && !errors.Is(err, syscall.ECONNRESET)) || out != "" {
			t.Errorf("%s: got %q, %v; want the connection closed unanswered", what, out, err)
		}
	}

	good("203.0.113.20")

	// Another uid may connect (mode 0666) but not speak PROXY.
	// It is closed at once, before or while socat writes: no answer.
	out, err := bsAsNobody(t, header(1, "198.51.100.66"), "socat", "-t", "5", "STDIO", "UNIX-CONNECT:"+sock)
	if strings.Contains(out, "peer=") || strings.Contains(out, "connect(") {
		t.Errorf("forged header from uid 65534: %q, %v; want the connection closed unanswered", out, err)
	}

	// Missing and malformed headers, from root.
	hello := []byte("\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03")
	udp := header(2, "198.51.100.67")
	udp[13] = 0x12 // UDP over IPv4: no client a TCP server can be told about
	for what, payload := range map[string][]byte{
		"no header (a ClientHello)":     hello,
		"no header (text)":              []byte("hello\n"),
		"v1 with a seventh field":       []byte("PROXY TCP4 198.51.100.68 192.0.2.1 4000 443 1\r\n"),
		"v1 with a leading zero":        []byte("PROXY TCP4 198.51.100.069 192.0.2.1 4000 443\r\n"),
		"v1 without CR":                 []byte("PROXY TCP4 198.51.100.70 192.0.2.1 4000 443\n"),
		"v2 UDP":                        udp,
		"v2 cut short":                  header(2, "198.51.100.71")[:20],
		"v2 with a bad version":         append([]byte(nil), append(header(2, "198.51.100.72")[:12], append([]byte{0x31}, header(2, "198.51.100.72")[13:]...)...)...),
		"v1 longer than 107 bytes":      []byte("PROXY UNKNOWN " + strings.Repeat("1", 100) + "\r\n"),
		"half a v2 signature, then EOF": header(2, "198.51.100.73")[:6],
	} {
		out, err := bsExchange(t, sock, payload)
		dropped(what, out, err)
	}

	// A client that sends half a header and stalls holds its connection
	// for the header timeout at most; the next client is served.
	staller, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer staller.Close()
	if _, err := staller.Write(header(2, "198.51.100.74")[:10]); err != nil {
		t.Fatal(err)
	}
	good("203.0.113.21")
	staller.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := staller.Read(make([]byte, 100)); n != 0 || err != io.EOF {
		t.Errorf("stalled client: read %d bytes, %v; want EOF", n, err)
	}

	// -trust-uid lets that uid in.
	log2 := filepath.Join(t.TempDir(), "peers.log")
	socatServer(t, dir, "trust2.test", freePort(t), log2, "-m", "0666", "-trust-uid", "65534")
	out, err = bsAsNobody(t, header(1, "198.51.100.75"), "socat", "-t", "5", "STDIO", "UNIX-CONNECT:"+filepath.Join(dir, "trust2.test"))
	if err != nil || out != "peer=198.51.100.75 port=4000\n" {
		t.Errorf("header from trusted uid 65534: %q, %v", out, err)
	}

	// The application saw the two good clients and nothing else.
	b, _ := os.ReadFile(log)
	if got, want := string(b), "203.0.113.20\n203.0.113.21\n"; got != want {
		t.Errorf("the server saw %q, want %q", got, want)
	}
}

func TestBindshimStaleLiveReplace(t *testing.T) {
	need(t, "socat")
	dir := bsDir(t)
	port := strconv.Itoa(freePort(t))
	sock := filepath.Join(dir, "r.test")

	// A socket file left by a server that died.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := net.Dial("unix", sock); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stale socket: dial gave %v, want ECONNREFUSED", err)
	}

	server := func(tag string, flags ...string) *Proc {
		args := append([]string{"-d", dir, "-p", port}, flags...)
		args = append(args, "r.test", "--", "socat", "TCP4-LISTEN:"+port+",bind=127.0.0.1,reuseaddr,fork",
			"SYSTEM:read l; echo "+tag+" $l $SOCAT_PEERADDR")
		return bsStart(t, args...)
	}
	header := bsHeader(t, 2, "203.0.113.30:5000", "192.0.2.1:443", "r.test")
	ask := func() string {
		out, _ := bsExchange(t, sock, append(append([]byte(nil), header...), "ping\n"...))
		return out
	}

	a := server("A")
	bsWaitSocket(t, a, sock)
	if got := ask(); got != "A ping 203.0.113.30\n" {
		t.Fatalf("over a stale socket: %q", got)
	}

	// A live socket is not taken without -replace.
	b := server("B")
	if err := b.Wait(t, 20*time.Second); err == nil {
		t.Errorf("second server on a live socket exited 0:\n%s", b.Output())
	}
	if !strings.Contains(b.Output(), "listening there already") {
		t.Errorf("second server on a live socket: %q, want it to say why", b.Output())
	}
	if got := ask(); got != "A ping 203.0.113.30\n" {
		t.Fatalf("after the refused takeover: %q", got)
	}

	// A connection in flight on A: header sent, request not yet.
	inflight, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer inflight.Close()
	inflight.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := inflight.Write(bsHeader(t, 1, "203.0.113.31:5001", "192.0.2.1:443", "")); err != nil {
		t.Fatal(err)
	}

	c := server("C", "-replace")
	waitFor(t, 15*time.Second, "new connections to reach the replacement", func() bool {
		if c.Exited() {
			t.Fatalf("replacement exited:\n%s", c.Output())
		}
		return strings.HasPrefix(ask(), "C ping")
	})
	if _, err := inflight.Write([]byte("late\n")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(inflight)
	if string(got) != "A late 203.0.113.31\n" {
		t.Errorf("connection in flight during the handover: %q, %v", got, err)
	}
	if a.Exited() {
		t.Errorf("old server exited during the handover:\n%s", a.Output())
	}
	for range 5 {
		if got := ask(); got != "C ping 203.0.113.30\n" {
			t.Errorf("after the handover: %q", got)
		}
	}
	if m, _ := filepath.Glob(sock + "~*"); len(m) != 0 {
		t.Errorf("temporary sockets left behind: %v", m)
	}
}

const nginxConf = `worker_processes 2;
user root;
events { worker_connections 64; }
http {
    log_format bindshim '$remote_addr sni=$ssl_server_name name=$server_name';
    access_log {{T}}/access.log bindshim;
    client_body_temp_path {{T}}/body;
    proxy_temp_path {{T}}/proxy;
    fastcgi_temp_path {{T}}/fastcgi;
    uwsgi_temp_path {{T}}/uwsgi;
    scgi_temp_path {{T}}/scgi;
    ssl_certificate {{CERT}};
    ssl_certificate_key {{KEY}};
    server {
        listen 443 ssl;
        listen [::]:443 ssl;
        server_name a.test;
        location / { return 200 "name=a.test remote=$remote_addr server=$server_addr:$server_port\n"; }
    }
    server {
        listen 443 ssl;
        listen [::]:443 ssl;
        server_name b.test;
        location / { return 200 "name=b.test remote=$remote_addr server=$server_addr:$server_port\n"; }
    }
}
`

func TestBindshimNginx(t *testing.T) {
	dir := bsDir(t)
	p, tmp := startNginx(t, dir, "a.test", "b.test")
	sockA, sockB := filepath.Join(dir, "a.test"), filepath.Join(dir, "b.test")

	get := func(sock, name string, ver byte, src, dst string) (string, error) {
		resp, err := bsGet(t, sock, bsHeader(t, ver, src, dst, name), name)
		if err != nil {
			return "", err
		}
		_, body, _ := strings.Cut(resp, "\r\n\r\n")
		return body, nil
	}
	check := func(sock, name string, ver byte, src, dst, want string) {
		t.Helper()
		body, err := get(sock, name, ver, src, dst)
		if err != nil || body != want {
			t.Errorf("%s via %s, v%d from %s: %q, %v; want %q", name, filepath.Base(sock), ver, src, body, err, want)
		}
	}
	// Either listening descriptor (0.0.0.0:443 or the IPv6-only [::]:443)
	// may accept a connection: an IPv4 client must look like IPv4 on both.
	for i := range 6 {
		check(sockA, "a.test", 2, fmt.Sprintf("203.0.113.%d:4000", 10+i), "192.0.2.1:443",
			fmt.Sprintf("name=a.test remote=203.0.113.%d server=192.0.2.1:443\n", 10+i))
	}
	check(sockB, "b.test", 1, "[2001:db8::10]:4000", "[2001:db8::1]:443", "name=b.test remote=2001:db8::10 server=2001:db8::1:443\n")
	check(sockB, "b.test", 2, "198.51.100.10:4000", "192.0.2.1:443", "name=b.test remote=198.51.100.10 server=192.0.2.1:443\n")

	// Concurrent clients each get their own address.
	var cwg sync.WaitGroup
	for i := range 40 {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			src := fmt.Sprintf("198.51.100.%d", 100+i)
			body, err := get(sockA, "a.test", byte(1+i%2), src+":4000", "192.0.2.1:443")
			if want := "name=a.test remote=" + src + " "; err != nil || !strings.HasPrefix(body, want) {
				t.Errorf("concurrent client %s: %q, %v", src, body, err)
			}
		}()
	}
	cwg.Wait()

	// A stalled header holds one worker's accept briefly, not the server.
	staller, err := net.Dial("unix", sockA)
	if err != nil {
		t.Fatal(err)
	}
	staller.Write(bsHeader(t, 2, "198.51.100.99:1", "192.0.2.1:443", "a.test")[:14])
	check(sockA, "a.test", 2, "203.0.113.30:4000", "192.0.2.1:443", "name=a.test remote=203.0.113.30 server=192.0.2.1:443\n")
	staller.Close()

	// Reload: new workers, same listening socket, no request lost.
	before := nginxWorkers(p.Pid())
	if len(before) != 2 {
		t.Fatalf("nginx workers: %v, want 2", before)
	}
	var (
		stop   atomic.Bool
		wg     sync.WaitGroup
		served atomic.Int64
		failMu sync.Mutex
		fails  []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load() && i < 2000; i++ {
			body, err := get(sockB, "b.test", 2, "198.51.100.20:4000", "192.0.2.1:443")
			if err != nil || !strings.HasPrefix(body, "name=b.test remote=198.51.100.20 ") {
				failMu.Lock()
				fails = append(fails, fmt.Sprintf("%q %v", body, err))
				failMu.Unlock()
				continue
			}
			served.Add(1)
		}
	}()
	waitFor(t, 10*time.Second, "requests before the reload", func() bool { return served.Load() >= 3 })
	p.Signal(t, syscall.SIGHUP)
	waitFor(t, 30*time.Second, "the old workers to be replaced", func() bool {
		now := nginxWorkers(p.Pid())
		for pid := range now {
			if before[pid] {
				return false
			}
		}
		return len(now) == 2
	})
	n := served.Load()
	waitFor(t, 10*time.Second, "requests after the reload", func() bool { return served.Load() >= n+3 })
	stop.Store(true)
	wg.Wait()
	if len(fails) > 0 {
		t.Errorf("%d of %d requests failed around the reload, first: %s", len(fails), int(served.Load())+len(fails), fails[0])
	}

	// Behind snilisten, from real (loopback) client addresses.
	_, err = os.Stat(filepath.Join("..", "bin", "snilisten"))
	viaSnilisten := err == nil
	if viaSnilisten {
		sp := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", sp)
		start(t, exec.Command(bin(t, "snilisten"), "-listen", "tcp:"+addr, "-mode", "unix", "-unix-directory", dir, "-proxy-proto"))
		waitListening(t, addr)
		for i, name := range []string{"a.test", "b.test"} {
			client := fmt.Sprintf("127.0.0.%d", 21+i)
			body, err := bsGetVia(t, addr, client, name)
			if want := fmt.Sprintf("name=%s remote=%s server=127.0.0.1:%d\n", name, client, sp); err != nil || body != want {
				t.Errorf("%s through snilisten: %q, %v; want %q", name, body, err, want)
			}
		}
	} else {
		t.Log("bin/snilisten not built: nginx tested without it")
	}

	log := filepath.Join(tmp, "access.log")
	waitFor(t, 5*time.Second, "the access log", func() bool {
		return bsFileHas(log, "203.0.113.10 sni=a.test name=a.test") &&
			(!viaSnilisten || bsFileHas(log, "127.0.0.22 sni=b.test name=b.test")) &&
			bsFileHas(log, "2001:db8::10 sni=b.test name=b.test")
	})
	if bsFileHas(log, "198.51.100.99") || bsFileHas(log, "::ffff:") {
		b, _ := os.ReadFile(log)
		t.Errorf("access log has a stalled client or a v4-mapped address:\n%s", b)
	}
}

func TestBindshimOpenSSL(t *testing.T) {
	need(t, "openssl")
	dir := bsDir(t)
	port := strconv.Itoa(freePort(t))
	pki := testPKI(t)
	p := bsStart(t, "-d", dir, "-p", port, "ossl.test", "--", "openssl", "s_server", "-accept", "127.0.0.1:"+port,
		"-cert", pki.CertFile, "-key", pki.KeyFile, "-www")
	sock := filepath.Join(dir, "ossl.test")
	bsWaitSocket(t, p, sock)
	for _, ver := range []byte{1, 2} {
		resp, err := bsGet(t, sock, bsHeader(t, ver, "203.0.113.40:4000", "192.0.2.1:443", "ossl.test"), "ossl.test")
		if err != nil || !strings.HasPrefix(resp, "HTTP/1.0 200 ok") || !strings.Contains(resp, "Ciphers supported in s_server binary") {
			t.Errorf("openssl s_server, v%d header: %q, %v", ver, resp, err)
		}
	}
}

func TestBindshimUsage(t *testing.T) {
	bs := bin(t, "bindshim")
	lib := bin(t, "libbindshim.so")
	dir := bsDir(t)
	run := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(bs, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	withLib := []string{"BINDSHIM_LIBRARY=" + lib}
	for _, c := range []struct {
		args []string
		env  []string
		code int
		want string
	}{
		{[]string{"-h"}, nil, 0, "usage: bindshim"},
		{[]string{"-version"}, nil, 0, "bindshim "},
		{[]string{"-d", dir}, withLib, 2, "missing host"},
		{[]string{"-d", dir, "a.test"}, withLib, 2, "missing command"},
		{[]string{"-d", dir, "a..test", "--", "true"}, withLib, 2, "host"},
		{[]string{"-d", dir, "a.test", "-alias", "../etc", "--", "true"}, withLib, 2, "-alias"},
		{[]string{"-d", dir, "-p", "0", "a.test", "--", "true"}, withLib, 2, "-p 0"},
		{[]string{"-d", dir, "-m", "0999", "a.test", "--", "true"}, withLib, 2, "-m"},
		{[]string{"-d", dir, "-g", "no-such-group-here", "a.test", "--", "true"}, withLib, 2, "-g"},
		{[]string{"-d", dir, "-trust-uid", "no-such-user-here", "a.test", "--", "true"}, withLib, 2, "-trust-uid"},
		{[]string{"-d", filepath.Join(dir, "missing"), "a.test", "--", "true"}, withLib, 2, "-d: socket directory"},
		{[]string{"-d", dir, strings.Repeat("a", 60) + "." + strings.Repeat("b", 60), "--", "true"}, withLib, 2, "longer than"},
		{[]string{"-d", dir, "a.test", "--", "true"}, []string{"BINDSHIM_LIBRARY=/nonexistent/libbindshim.so"}, 1, "BINDSHIM_LIBRARY"},
		{[]string{"-d", dir, "a.test", "--", "/nonexistent/server"}, withLib, 1, "/nonexistent/server"},
	} {
		out, code := run(c.env, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("bindshim %s: exit %d, %q; want exit %d and %q", strings.Join(c.args, " "), code, out, c.code, c.want)
		}
	}

	// The environment contract the library reads.
	out, code := run(withLib, "-d", dir, "-p", "8443", "-m", "600", "-g", "65534", "-trust-uid", "65534", "-trust-uid", "1,2",
		"-header-timeout", "250ms", "-replace", "-handoff", "env.test", "-alias", "x.test", "--", "env")
	for _, want := range []string{
		"LD_PRELOAD=" + lib + "\n", "BINDSHIM_SOCKET=" + filepath.Join(dir, "env.test") + "\n", "BINDSHIM_PORT=8443\n",
		"BINDSHIM_MODE=600\n", "BINDSHIM_GID=65534\n", "BINDSHIM_TRUST_UIDS=65534,1,2\n",
		"BINDSHIM_HEADER_TIMEOUT_MS=250\n", "BINDSHIM_REPLACE=1\n", "BINDSHIM_HANDOFF=1\n",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("environment: exit %d, missing %q in:\n%s", code, want, out)
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "x.test")); err != nil || target != "env.test" {
		t.Errorf("alias x.test: %q, %v", target, err)
	}
	// A dangling alias is taken over; one whose target exists is not,
	// unless -replace.
	alias := func() string { target, _ := os.Readlink(filepath.Join(dir, "x.test")); return target }
	if out, code := run(withLib, "-d", dir, "other.test", "-alias", "x.test", "--", "true"); code != 0 || alias() != "other.test" {
		t.Errorf("dangling alias: exit %d, %q, link to %q", code, out, alias())
	}
	bsWriteFile(t, dir, "other.test", "")
	if out, code := run(withLib, "-d", dir, "third.test", "-alias", "x.test", "--", "true"); code != 1 || !strings.Contains(out, "already points to") || alias() != "other.test" {
		t.Errorf("alias owned by another name: exit %d, %q, link to %q", code, out, alias())
	}
	if out, code := run(withLib, "-d", dir, "-replace", "third.test", "-alias", "x.test", "--", "true"); code != 0 || alias() != "third.test" {
		t.Errorf("alias taken with -replace: exit %d, %q, link to %q", code, out, alias())
	}

	// A static program cannot be reached: say so.
	if out, code := run(withLib, "-d", dir, "static.test", "--", bs, "-version"); code != 0 || !strings.Contains(out, "statically linked") {
		t.Errorf("static program: exit %d, %q; want a warning", code, out)
	}

	// Without BINDSHIM_LIBRARY, the library is found beside the binary;
	// a lone binary names every place it looked.
	lone := filepath.Join(t.TempDir(), "bindshim")
	copyFile(t, bs, lone, 0o755)
	cmd := exec.Command(lone, "-d", dir, "lone.test", "--", "true")
	cmd.Env = bsEnvWithout(os.Environ(), "BINDSHIM_LIBRARY")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), filepath.Join(filepath.Dir(lone), "libbindshim.so")) {
		if _, e := os.Stat("/usr/local/lib/snitools/libbindshim.so"); e != nil {
			t.Errorf("lone launcher: %v, %q; want it to name where it looked", err, out)
		}
	}
	copyFile(t, lib, filepath.Join(filepath.Dir(lone), "libbindshim.so"), 0o644)
	cmd = exec.Command(lone, "-d", dir, "lone.test", "--", "env")
	cmd.Env = bsEnvWithout(os.Environ(), "BINDSHIM_LIBRARY")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "LD_PRELOAD="+filepath.Join(filepath.Dir(lone), "libbindshim.so")) {
		t.Errorf("library beside the launcher: %v, %q", err, out)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// TestBindshimInstall checks that `make install` puts the library where
// the installed launcher looks for it: version.LibDir, under PREFIX, with
// DESTDIR only prefixed to where files are written.
func TestBindshimInstall(t *testing.T) {
	need(t, "make", "cc")
	src := t.TempDir()
	// A copy of the tree, so that building with another PREFIX does not
	// rewrite the bin/ that other tests are running.
	for _, p := range []string{"Makefile", "go.mod", "go.sum", "lib", "cmd/bindshim", "man"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", filepath.Join("..", p), filepath.Join(src, p)).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v\n%s", p, err, out)
		}
	}
	prefix := filepath.Join(t.TempDir(), "prefix")
	dest := t.TempDir()
	for _, destdir := range []string{"", dest} {
		cmd := exec.Command("make", "-C", src, "install", "COMMANDS=bindshim", "PREFIX="+prefix, "DESTDIR="+destdir, "VERSION=test")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install DESTDIR=%s: %v\n%s", destdir, err, out)
		}
	}
	for _, root := range []string{"", dest} {
		for _, f := range []string{"bin/bindshim", "lib/snitools/libbindshim.so", "share/man/man1/bindshim.1"} {
			if _, err := os.Stat(root + filepath.Join(prefix, f)); err != nil {
				t.Errorf("installed file: %v", err)
			}
		}
	}
	dir := bsDir(t)
	cmd := exec.Command(filepath.Join(prefix, "bin", "bindshim"), "-d", dir, "inst.test", "--", "env")
	cmd.Env = bsEnvWithout(os.Environ(), "BINDSHIM_LIBRARY")
	out, err := cmd.CombinedOutput()
	if want := "LD_PRELOAD=" + filepath.Join(prefix, "lib", "snitools", "libbindshim.so") + "\n"; err != nil || !strings.Contains(string(out), want) {
		t.Errorf("installed launcher: %v, want %q in:\n%s", err, want, out)
	}
}

func TestBindshimSocketCalls(t *testing.T) {
	dir := bsDir(t)
	port := freePort(t)
	pr := bsStartProbe(t, port, "-d", dir, "-p", strconv.Itoa(port), "-header-timeout", "300ms", "probe.test")
	expect, fdOf := pr.expect, bsProbeFD
	nofile := 0
	fmt.Sscanf(expect("", "listening fd=3 nonblock=1 cloexec=1"), "listening fd=3 nonblock=1 cloexec=1 nofile=%d", &nofile)
	sock := filepath.Join(dir, "probe.test")

	// Listening socket: getsockname is the TCP address; options pass.
	expect("name 3 16", fmt.Sprintf("len=16 family=2 addr=127.0.0.1:%d", port))
	expect("opt 3", "nodelay=0 v6only=0 domain=2 type=1")

	// A dropped connection on a non-blocking listener: EAGAIN.
	bad, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	bad.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	expect("accept 128", "accept err=Resource temporarily unavailable")
	bad.Close()
	// A stalled one too, once the header timeout passes.
	stall, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stall.Write([]byte("PROXY TCP4 "))
	expect("accept 128", "accept err=Resource temporarily unavailable")
	stall.Close()

	// addrlen 4: four bytes written, the full length returned; the bytes
	// after the header are the application's.
	good, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	good.Write(append(bsHeader(t, 1, "203.0.113.50:4321", "192.0.2.5:443", ""), "after\n"...))
	line := expect("accept 4", "len=16 family=2 addr=- bytes=0200"+"10e1"+"aaaaaaaa")
	fd := fdOf(line)
	expect("peer "+fd+" 16", "len=16 family=2 addr=203.0.113.50:4321")
	expect("peer "+fd+" 8", "len=16 family=2 addr=- bytes=020010e1cb007132aaaa")
	expect("name "+fd+" 64", "len=16 family=2 addr=192.0.2.5:443")
	expect("opt "+fd, "nodelay=0 v6only=0 domain=2")
	expect("read "+fd, "data=after")
	dup := fdOf(expect("dup " + fd))
	// A high descriptor lives in another chunk of the library's table.
	high := "3000"
	if nofile <= 3000 {
		t.Logf("RLIMIT_NOFILE %d: descriptor %s not tried", nofile, high)
		high = dup
	} else {
		expect("dup2 "+fd+" "+high, "dup2 r="+high)
	}
	expect("close "+fd, "close r=0")
	expect("peer "+dup+" 16", "addr=203.0.113.50:4321")
	expect("peer "+high+" 16", "addr=203.0.113.50:4321")
	expect("name "+high+" 16", "addr=192.0.2.5:443")
	// dup2 onto a mapped descriptor replaces what it knew.
	expect("dup2 3 "+high, "dup2 r="+high)
	expect("name "+high+" 16", fmt.Sprintf("addr=127.0.0.1:%d", port))
	expect("close "+high, "close r=0")
	if high != dup {
		expect("close "+dup, "close r=0")
	}
	// A closed descriptor is forgotten: the real call answers.
	expect("peer "+dup+" 16", "err=Bad file descriptor")
}
