package tests

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestRedirect80Redirects sends requests as raw bytes, so that nothing
// normalizes them on the way, and checks status and Location exactly.
func TestRedirect80Redirects(t *testing.T) {
	r := startRedirect80(t, "-listen", "tcp:127.0.0.1:0", "-listen", "tcp:[::1]:0")
	for _, tc := range []struct {
		method, target, host string
		status               int
		location             string
	}{
		{"GET", "/", "a.test", 301, "https://a.test/"},
		{"HEAD", "/h", "a.test", 301, "https://a.test/h"},
		{"POST", "/form?x=1", "a.test", 308, "https://a.test/form?x=1"},
		{"PUT", "/p", "a.test", 308, "https://a.test/p"},
		{"DELETE", "/d", "a.test", 308, "https://a.test/d"},
		{"OPTIONS", "/o", "a.test", 308, "https://a.test/o"},
		// The path and query are kept byte for byte: invalid escapes,
		// escaped slashes and dots, doubled slashes inside, empty
		// parameters, characters a URL library would re-encode.
		{"GET", "/a%zz/./b/../%2e%2E/%2F%2f/c//d;p=1?x=%41%2f&y=&&z=<>\"'{}|^`~&%0D%0A", "a.test", 301,
			"https://a.test/a%zz/./b/../%2e%2E/%2F%2f/c//d;p=1?x=%41%2f&y=&&z=<>\"'{}|^`~&%0D%0A"},
		{"GET", "/?", "a.test", 301, "https://a.test/?"},
		{"GET", "/@user?next=//evil.test", "a.test", 301, "https://a.test/@user?next=//evil.test"},
		{"GET", "/x", "WWW.Example.TEST.:8080", 301, "https://www.example.test/x"},
		{"GET", "/x", "a.test:", 301, "https://a.test/x"},
		{"GET", "/x", "127.0.0.1:80", 301, "https://127.0.0.1/x"},
		{"GET", "/v6?q", "[::1]:8080", 301, "https://[::1]/v6?q"},
		{"GET", "/v6", "[2001:DB8:0:0::1]", 301, "https://[2001:db8::1]/v6"},
		{"GET", "http://Other.test:81/p?q", "a.test", 301, "https://other.test/p?q"},
		{"GET", "http://b.test", "a.test", 301, "https://b.test/"},
		{"GET", "http://b.test?q=1", "a.test", 301, "https://b.test/?q=1"},
		{"POST", "HTTP://[::1]/x", "a.test", 308, "https://[::1]/x"},
		{"GET", "/", "_.wild.test", 301, "https://_.wild.test/"},
	} {
		for _, addr := range r.Addrs {
			req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", tc.method, tc.target, tc.host)
			resp, body := rawExchange(t, addr, req, tc.method)
			if resp.StatusCode != tc.status || resp.Header.Get("Location") != tc.location {
				t.Errorf("%s %s Host %s via %s: %d %q, want %d %q", tc.method, tc.target, tc.host, addr,
					resp.StatusCode, resp.Header.Get("Location"), tc.status, tc.location)
				continue
			}
			if tc.method == "HEAD" {
				if len(body) != 0 || resp.ContentLength <= 0 {
					t.Errorf("HEAD: body %q, Content-Length %d; want no body and the GET length", body, resp.ContentLength)
				}
				continue
			}
			if int64(len(body)) != resp.ContentLength || !strings.Contains(string(body), "<a href=\"") {
				t.Errorf("%s %s: body %q with Content-Length %d", tc.method, tc.target, body, resp.ContentLength)
			}
		}
	}
	// The HTML body escapes what the path may hold.
	_, body := rawExchange(t, r.Addr(), "GET /<script>?a=\"&b HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET")
	if strings.Contains(string(body), "<script>") || !strings.Contains(string(body), "&lt;script&gt;?a=&#34;&amp;b") {
		t.Errorf("body does not escape the URL: %q", body)
	}
	// HEAD and GET agree on the length.
	get, _ := rawExchange(t, r.Addr(), "GET /same HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET")
	head, _ := rawExchange(t, r.Addr(), "HEAD /same HTTP/1.1\r\nHost: a.test\r\n\r\n", "HEAD")
	if get.ContentLength != head.ContentLength || get.Header.Get("Date") == "" {
		t.Errorf("GET Content-Length %d, HEAD %d, Date %q", get.ContentLength, head.ContentLength, get.Header.Get("Date"))
	}
	waitLog(t, r.Proc, "host=www.example.test", "method=GET", "path=/x", "status=301", "client=127.0.0.1:")
	waitFor(t, 5*time.Second, "one log line per request", func() bool {
		return len(logLines(r.Proc, "msg=request", "status=301")) >= 2*14
	})
}

// TestRedirect80Refusals sends requests that must never produce a
// Location: each gets its status, no Location, and a closed connection.
func TestRedirect80Refusals(t *testing.T) {
	r := startRedirect80(t, "-listen", "tcp:127.0.0.1:0", "-max-header-bytes", "1024")
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\n\r\n", 400},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400},
		{"userinfo in Host", "GET / HTTP/1.1\r\nHost: evil.test@a.test\r\n\r\n", 400},
		{"userinfo in Host, other way", "GET / HTTP/1.1\r\nHost: a.test@evil.test\r\n\r\n", 400},
		{"backslash in Host", "GET / HTTP/1.1\r\nHost: evil.test\\a.test\r\n\r\n", 400},
		{"slash in Host", "GET / HTTP/1.1\r\nHost: evil.test/a.test\r\n\r\n", 400},
		{"CR in Host", "GET / HTTP/1.1\r\nHost: a.test\rLocation: https://evil.test\r\n\r\n", 400},
		{"NUL in Host", "GET / HTTP/1.1\r\nHost: a.test\x00.evil.test\r\n\r\n", 400},
		{"space in Host", "GET / HTTP/1.1\r\nHost: a.test evil.test\r\n\r\n", 400},
		{"percent in Host", "GET / HTTP/1.1\r\nHost: a%2etest\r\n\r\n", 400},
		{"dot-dot Host", "GET / HTTP/1.1\r\nHost: a..test\r\n\r\n", 400},
		{"bad port", "GET / HTTP/1.1\r\nHost: a.test:65536\r\n\r\n", 400},
		{"bare IPv6", "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", 400},
		{"IPv6 zone", "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 400},
		{"short IPv4", "GET / HTTP/1.1\r\nHost: 127.1\r\n\r\n", 400},
		{"network path", "GET //evil.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"backslash path", "GET /\\evil.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"backslash later", "GET /a\\b HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"absolute with userinfo", "GET http://a.test@evil.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"absolute network path", "GET http://a.test//evil.test HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"other scheme", "GET javascript://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"high byte in path", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"CR in target", "GET /a\rLocation:x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"HTTP/0.9", "GET /\r\n\r\n", 400},
		{"double space", "GET  / HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : evil.test\r\n\r\n", 400},
		{"folded Host", "GET / HTTP/1.1\r\nHost: a.test\r\n evil.test\r\n\r\n", 400},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"two CLs", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n", 400},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
		{"HTTP/3.0", "GET / HTTP/3.0\r\nHost: a.test\r\n\r\n", 505},
		{"header too large", "GET / HTTP/1.1\r\nHost: a.test\r\nX: " + strings.Repeat("a", 2000) + "\r\n\r\n", 431},
		{"request line too long", "GET /" + strings.Repeat("a", 2000) + " HTTP/1.1\r\nHost: a.test\r\n\r\n", 414},
	} {
		out := rawResponse(t, r.Addr(), tc.raw)
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(out))), nil)
		if err != nil {
			t.Errorf("%s: unreadable response %q: %v", tc.name, out, err)
			continue
		}
		if resp.StatusCode != tc.status || resp.Header.Get("Location") != "" || !resp.Close {
			t.Errorf("%s: status %d, Location %q, close %v; want %d, none, close", tc.name, resp.StatusCode, resp.Header.Get("Location"), resp.Close, tc.status)
		}
		if strings.Contains(strings.ToLower(string(out)), "evil") {
			t.Errorf("%s: the response repeats what the client sent: %q", tc.name, out)
		}
	}
	waitLog(t, r.Proc, "status=400", `error="userinfo (@) in the host"`, "host=evil.test@a.test")
}

// TestRedirect80Curl drives redirect80 with curl and Go's HTTP client.
func TestRedirect80Curl(t *testing.T) {
	need(t, "curl")
	r := startRedirect80(t, "-listen", "tcp:127.0.0.1:0", "-listen", "tcp:[::1]:0")
	_, port, _ := net.SplitHostPort(r.Addr())
	_, port6, _ := net.SplitHostPort(r.Addrs[1])
	curl := func(args ...string) string {
		t.Helper()
		all := append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_code} %header{location}", "--max-time", "10"}, args...)
		out, err := exec.Command("curl", all...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"http://localhost:" + port + "/get?x=1"}, "301 https://localhost/get?x=1"},
		{[]string{"-X", "POST", "-d", "a=b", "http://localhost:" + port + "/post"}, "308 https://localhost/post"},
		{[]string{"-I", "http://localhost:" + port + "/head"}, "301 https://localhost/head"},
		{[]string{"-H", "Host: Example.TEST", "http://127.0.0.1:" + port + "/h"}, "301 https://example.test/h"},
		{[]string{"--path-as-is", "http://localhost:" + port + "/a/../b/%7e/%zz?q=%20+x"}, "301 https://localhost/a/../b/%7e/%zz?q=%20+x"},
		{[]string{"-g", "http://[::1]:" + port6 + "/six?q"}, "301 https://[::1]/six?q"},
		{[]string{"-0", "http://localhost:" + port + "/ten"}, "301 https://localhost/ten"},
		{[]string{"-0", "-H", "Host:", "http://localhost:" + port + "/nohost"}, "400 "},
		{[]string{"-H", "Host: a.test@evil.test", "http://localhost:" + port + "/"}, "400 "},
	} {
		if got := curl(tc.args...); got != tc.want {
			t.Errorf("curl %v: %q, want %q", tc.args, got, tc.want)
		}
	}
	// A UNIX socket listener, as behind a local proxy.
	sock := filepath.Join(socketDir(t), "r80")
	u := startRedirect80(t, "-listen", "unix:"+sock)
	if got := curl("--unix-socket", sock, "http://u.test/unix?x"); got != "301 https://u.test/unix?x" {
		t.Errorf("over a UNIX socket: %q", got)
	}
	waitLog(t, u.Proc, "client=unix", "host=u.test", "status=301")

	// A 1000-byte POST body is read and dropped; curl sees the 308 whole.
	body := strings.Repeat("z", 1000)
	if got := curl("--data-binary", body, "http://localhost:"+port+"/big"); got != "308 https://localhost/big" {
		t.Errorf("POST with body: %q", got)
	}

	// Go's client, not following redirects, on one kept-alive connection.
	var conns atomic.Int32
	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{},
	}
	defer client.CloseIdleConnections()
	for i, m := range []string{"GET", "HEAD", "POST", "PATCH", "GET"} {
		req, _ := http.NewRequest(m, fmt.Sprintf("http://127.0.0.1:%s/go/%d?i=%d", port, i, i), strings.NewReader("payload"))
		req.Host = "go.test"
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			ConnectDone: func(string, string, error) { conns.Add(1) },
		}))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		want := 308
		if m == "GET" || m == "HEAD" {
			want = 301
		}
		if loc := fmt.Sprintf("https://go.test/go/%d?i=%d", i, i); resp.StatusCode != want || resp.Header.Get("Location") != loc {
			t.Errorf("Go %s: %d %q, want %d %q", m, resp.StatusCode, resp.Header.Get("Location"), want, loc)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("Go client used %d connections for 5 requests, want 1 (keep-alive)", n)
	}
}

// TestRedirect80KeepAlive checks several requests on one connection:
// one at a time, pipelined in one write, with bodies between them, and
// the HTTP/1.0 keep-alive handshake.
func TestRedirect80KeepAlive(t *testing.T) {
	r := startRedirect80(t, "-listen", "tcp:127.0.0.1:0")
	c, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	expect := func(method, loc string, status int) *http.Response {
		t.Helper()
		resp, _, err := readResponse(br, method)
		if err != nil {
			t.Fatalf("read response (want %s): %v", loc, err)
		}
		if resp.StatusCode != status || resp.Header.Get("Location") != loc {
			t.Fatalf("got %d %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), status, loc)
		}
		return resp
	}
	for i := range 5 {
		fmt.Fprintf(c, "GET /seq/%d HTTP/1.1\r\nHost: h%d.test\r\n\r\n", i, i)
		expect("GET", fmt.Sprintf("https://h%d.test/seq/%d", i, i), 301)
	}
	// Pipelined, with a POST body (the next request follows the body
	// directly) and a HEAD, all in one write.
	io.WriteString(c, "POST /p1 HTTP/1.1\r\nHost: p.test\r\nContent-Length: 11\r\n\r\nGET /bogus\n"+
		"HEAD /p2 HTTP/1.1\r\nHost: p.test\r\n\r\n"+
		"\r\nGET /p3 HTTP/1.1\nHost: p.test\n\n")
	expect("POST", "https://p.test/p1", 308)
	expect("HEAD", "https://p.test/p2", 301)
	expect("GET", "https://p.test/p3", 301)
	// A body sent after the header, in pieces.
	io.WriteString(c, "PUT /put HTTP/1.1\r\nHost: p.test\r\nContent-Length: 6000\r\n\r\n")
	expect("PUT", "https://p.test/put", 308)
	for range 6 {
		c.Write([]byte(strings.Repeat("b", 1000)))
	}
	io.WriteString(c, "GET /after HTTP/1.1\r\nHost: p.test\r\n\r\n")
	expect("GET", "https://p.test/after", 301)
	// Connection: close ends it.
	io.WriteString(c, "GET /last HTTP/1.1\r\nHost: p.test\r\nConnection: close\r\n\r\n")
	if resp := expect("GET", "https://p.test/last", 301); !resp.Close {
		t.Errorf("Connection: close not echoed")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection still open after Connection: close: %v", err)
	}

	// HTTP/1.0: closed by default, kept alive on request.
	c2, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(20 * time.Second))
	br = bufio.NewReader(c2)
	io.WriteString(c2, "GET /ka HTTP/1.0\r\nHost: p.test\r\nConnection: keep-alive\r\n\r\n")
	resp, _, err := readResponse(br, "GET")
	if err != nil || resp.Header.Get("Connection") != "keep-alive" || resp.Header.Get("Location") != "https://p.test/ka" {
		t.Fatalf("HTTP/1.0 keep-alive: %v %v", resp, err)
	}
	io.WriteString(c2, "GET /ka2 HTTP/1.0\r\nHost: p.test\r\n\r\n")
	resp, _, err = readResponse(br, "GET")
	if err != nil || !resp.Close || resp.Header.Get("Location") != "https://p.test/ka2" {
		t.Fatalf("HTTP/1.0 second request: %v %v", resp, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("HTTP/1.0 connection still open: %v", err)
	}

	// A chunked body is not read: the answer closes the connection, and
	// the client still gets it whole although it keeps sending.
	c3, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c3, "POST /chunked HTTP/1.1\r\nHost: p.test\r\nTransfer-Encoding: chunked\r\n\r\n")
	resp, _, err = readResponse(bufio.NewReader(c3), "POST")
	if err != nil || resp.StatusCode != 308 || !resp.Close {
		t.Fatalf("chunked POST: %v %v", resp, err)
	}
	io.WriteString(c3, "5\r\nhello\r\n0\r\n\r\n")
}

// TestRedirect80ACMEUnix forwards challenges to real HTTP servers on UNIX
// sockets named after the host, with the wildcard, and nothing else.
func TestRedirect80ACMEUnix(t *testing.T) {
	dir := socketDir(t)
	exact := unixACME(t, dir, "a.test")
	wild := unixACME(t, dir, "_.example.test")
	own := unixACME(t, dir, "www.example.test")
	r := startRedirect80(t, "-listen", "tcp:127.0.0.1:0", "-acme", "unix:"+dir, "-acme-timeout", "1s")
	const tok = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

	status, _, body := get(t, r.Addr(), "A.test:80", "/.well-known/acme-challenge/"+tok)
	if status != 200 || body != tok+".a.test" || exact.hits.Load() != 1 {
		t.Fatalf("challenge for a.test: %d %q (hits %d)", status, body, exact.hits.Load())
	}
	exact.mu.Lock()
	if exact.host != "a.test" || exact.last.Get("User-Agent") != "acme-test" || exact.last.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("backend saw Host %q, headers %v", exact.host, exact.last)
	}
	exact.mu.Unlock()
	if status, _, body := get(t, r.Addr(), "mail.example.test", "/.well-known/acme-challenge/tok"); status != 200 || body != "tok._.example.test" {
		t.Errorf("wildcard: %d %q", status, body)
	}
	if status, _, body := get(t, r.Addr(), "www.example.test", "/.well-known/acme-challenge/tok"); status != 200 || body != "tok.www.example.test" {
		t.Errorf("exact name over wildcard: %d %q", status, body)
	}
	// Absolute form: the target's authority chooses the backend.
	resp, rbody := rawExchange(t, r.Addr(), "GET http://a.test/.well-known/acme-challenge/abs HTTP/1.1\r\nHost: mail.example.test\r\n\r\n", "GET")
	if resp.StatusCode != 200 || string(rbody) != "abs.a.test" || resp.Header.Get("X-Backend") != "a.test" {
		t.Errorf("absolute form: %d %q", resp.StatusCode, rbody)
	}

	// Everything else is redirected, never forwarded.
	before := exact.hits.Load() + wild.hits.Load() + own.hits.Load()
	for _, tc := range []struct{ method, path string }{
		{"GET", "/"},
		{"GET", "/.well-known/acme-challenge/"},
		{"GET", "/.well-known/acme-challenge/tok?x=1"},
		{"GET", "/.well-known/acme-challenge/a/b"},
		{"GET", "/.well-known/acme-challenge/..%2f..%2fetc"},
		{"GET", "/.well-known/acme-challenge/%41"},
		{"HEAD", "/.well-known/acme-challenge/tok"},
		{"POST", "/.well-known/acme-challenge/tok"},
	} {
		resp, _ := rawExchange(t, r.Addr(), fmt.Sprintf("%s %s HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n", tc.method, tc.path), tc.method)
		if resp.StatusCode != 301 && resp.StatusCode != 308 || resp.Header.Get("Location") != "https://a.test"+tc.path {
			t.Errorf("%s %s: %d %q, want a redirect", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if after := exact.hits.Load() + wild.hits.Load() + own.hits.Load(); after != before {
		t.Errorf("%d requests reached backends that should have been redirected", after-before)
	}
	// An IP-literal host has no socket name: redirected.
	if status, loc, _ := get(t, r.Addr(), "127.0.0.1", "/.well-known/acme-challenge/tok"); status != 301 || loc != "https://127.0.0.1/.well-known/acme-challenge/tok" {
		t.Errorf("IP host challenge: %d %q", status, loc)
	}

	// Failures: no socket, a stale socket, a slow backend.
	if status, _, _ := get(t, r.Addr(), "none.test", "/.well-known/acme-challenge/tok"); status != 502 {
		t.Errorf("no backend: %d, want 502", status)
	}
	stale, err := net.Listen("unix", filepath.Join(dir, "stale.test"))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if status, _, _ := get(t, r.Addr(), "stale.test", "/.well-known/acme-challenge/tok"); status != 502 {
		t.Errorf("stale socket: %d, want 502", status)
	}
	if status, _, _ := get(t, r.Addr(), "a.test", "/.well-known/acme-challenge/slow"); status != 504 {
		t.Errorf("slow backend: %d, want 504", status)
	}
	for _, want := range [][]string{
		{"status=502", "host=none.test", "error="},
		{"status=502", "host=stale.test", "error=", "stale"},
		{"status=504", "host=a.test", "error="},
		{"status=200", "host=a.test", "backend=" + filepath.Join(dir, "a.test")},
		{"status=200", "host=mail.example.test", "backend=" + filepath.Join(dir, "_.example.test")},
	} {
		waitLog(t, r.Proc, want...)
	}
}

// TestRedirect80ACMETCP forwards challenges to the hosts' own addresses,
// only inside -backend-cidr, and never back to redirect80 itself.
func TestRedirect80ACMETCP(t *testing.T) {
	// One backend port on two loopback addresses: 127.0.0.1 is allowed,
	// 127.0.0.2 is outside the CIDR, so a refusal there is the allow
	// list's doing and not a missing server.
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln1.Addr().(*net.TCPAddr).Port
	ln2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	b1 := serveACME(t, ln1, "one")
	b2 := serveACME(t, ln2, "two")
	r := startRedirect80(t, "-listen", "tcp:127.0.0.1:0", "-acme", "tcp", "-backend-cidr", "127.0.0.1/32",
		"-acme-port", fmt.Sprint(port), "-acme-timeout", "2s")

	// A name: localhost resolves (through /etc/hosts) to 127.0.0.1 and
	// perhaps ::1, which is outside the CIDR and skipped.
	if status, _, body := get(t, r.Addr(), "localhost", "/.well-known/acme-challenge/tok"); status != 200 || body != "tok.one" {
		t.Errorf("localhost: %d %q", status, body)
	}
	if status, _, body := get(t, r.Addr(), "127.0.0.1:80", "/.well-known/acme-challenge/ip"); status != 200 || body != "ip.one" {
		t.Errorf("127.0.0.1: %d %q", status, body)
	}
	if status, _, _ := get(t, r.Addr(), "127.0.0.2", "/.well-known/acme-challenge/tok"); status != 502 {
		t.Errorf("127.0.0.2 outside the CIDR: %d, want 502", status)
	}
	if status, _, _ := get(t, r.Addr(), "[::1]", "/.well-known/acme-challenge/tok"); status != 502 {
		t.Errorf("::1 outside the CIDR: %d, want 502", status)
	}
	if n := b2.hits.Load(); n != 0 {
		t.Errorf("the backend outside the CIDR got %d requests", n)
	}
	if b1.hits.Load() != 2 {
		t.Errorf("allowed backend got %d requests, want 2", b1.hits.Load())
	}
	if status, _, _ := get(t, r.Addr(), "no-such-name.invalid", "/.well-known/acme-challenge/tok"); status != 502 {
		t.Errorf("unresolvable name: %d, want 502", status)
	}
	waitLog(t, r.Proc, "status=502", "host=127.0.0.2", "outside")
	// Non-challenges are still redirected.
	if status, loc, _ := get(t, r.Addr(), "localhost", "/x"); status != 301 || loc != "https://localhost/x" {
		t.Errorf("non-challenge: %d %q", status, loc)
	}

	// A challenge whose name points at redirect80 itself is refused, not
	// looped.
	self := startRedirect80(t, "-listen", "tcp:127.0.0.1:0", "-acme", "tcp", "-backend-cidr", "127.0.0.0/8")
	_, selfPort, _ := net.SplitHostPort(self.Addr())
	self.Signal(t, syscall.SIGTERM)
	self.Wait(t, 10*time.Second)
	loop := startRedirect80(t, "-listen", "tcp:127.0.0.1:"+selfPort, "-acme", "tcp", "-backend-cidr", "127.0.0.0/8", "-acme-port", selfPort)
	if status, _, _ := get(t, loop.Addr(), "127.0.0.1", "/.well-known/acme-challenge/loop"); status != 502 {
		t.Errorf("challenge pointing back at redirect80: %d, want 502", status)
	}
	waitLog(t, loop.Proc, "path=/.well-known/acme-challenge/loop", "own listening address")
	if n := len(logLines(loop.Proc, "path=/.well-known/acme-challenge/loop")); n != 1 {
		t.Errorf("%d log lines for the looping challenge, want 1 (no loop):\n%s", n, loop.Output())
	}
}

// TestRedirect80SlowClients checks the bounds: slow headers time out with
// 408, one client cannot hold every slot, idle kept-alive connections
// give way to new clients.
func TestRedirect80SlowClients(t *testing.T) {
	r := startRedirect80(t, "-listen", "tcp:127.0.0.1:0", "-header-timeout", "2s", "-max-conns-per-client", "8")

	// Slowloris from 127.0.0.1: eight connections trickling a header,
	// one byte at a time. The ninth is refused; a client from 127.0.0.2
	// is served meanwhile; the slow ones end with 408 although they
	// keep sending.
	var wg sync.WaitGroup
	results := make(chan string, 8)
	var opened sync.WaitGroup
	for range 8 {
		wg.Add(1)
		opened.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
			opened.Done()
			if err != nil {
				results <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			go func() {
				for _, b := range []byte("GET / HTTP/1.1\r\nHost: slow.test\r\nX-Slow: " + strings.Repeat("s", 200)) {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
			out, _ := io.ReadAll(c)
			results <- string(out)
		}()
	}
	opened.Wait()
	waitFor(t, 10*time.Second, "8 connections held", func() bool { return socketCount(t, r.Pid()) >= 9 })
	out := rawResponse(t, r.Addr(), "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if !strings.HasPrefix(string(out), "HTTP/1.1 503 ") {
		t.Errorf("ninth connection from the same client: %q, want 503", out)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatalf("dial from 127.0.0.2: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /other HTTP/1.1\r\nHost: a.test\r\n\r\n")
	resp, _, err := readResponse(bufio.NewReader(c), "GET")
	c.Close()
	if err != nil || resp.StatusCode != 301 {
		t.Errorf("other client while one holds its limit: %v %v", resp, err)
	}
	wg.Wait()
	close(results)
	for got := range results {
		if !strings.HasPrefix(got, "HTTP/1.1 408 ") {
			t.Errorf("slow client got %q, want 408", got)
		}
	}
	waitLog(t, r.Proc, "status=408")
	waitLog(t, r.Proc, "too many connections")
	// A slow but steady client that finishes within the timeout is
	// served (once the slow ones are gone: they count against the same
	// address).
	waitFor(t, 10*time.Second, "the slow connections to close", func() bool { return socketCount(t, r.Pid()) <= 1 })
	c, err = net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, part := range []string{"GET /steady HT", "TP/1.1\r\nHo", "st: a.test\r\n", "\r\n"} {
		io.WriteString(c, part)
		time.Sleep(50 * time.Millisecond)
	}
	resp, _, err = readResponse(bufio.NewReader(c), "GET")
	c.Close()
	if err != nil || resp.Header.Get("Location") != "https://a.test/steady" {
		t.Errorf("steady client: %v %v", resp, err)
	}

	// -max-conns 3: three kept-alive idle connections; a fourth client
	// is served and one idle connection is closed to make room.
	r2 := startRedirect80(t, "-listen", "tcp:127.0.0.1:0", "-max-conns", "3")
	var idle []net.Conn
	for i := range 3 {
		c, err := net.DialTimeout("tcp", r2.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "GET /idle%d HTTP/1.1\r\nHost: a.test\r\n\r\n", i)
		if _, _, err := readResponse(bufio.NewReader(c), "GET"); err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	resp, _ = rawExchange(t, r2.Addr(), "GET /new HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET")
	if resp.Header.Get("Location") != "https://a.test/new" {
		t.Errorf("new client at -max-conns: %v", resp.Header)
	}
	closed := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed == 0 {
		t.Errorf("no idle connection was closed to make room")
	}
}

// TestRedirect80SocketActivation runs redirect80 under
// systemd-socket-activate and checks readiness, service and a clean stop.
func TestRedirect80SocketActivation(t *testing.T) {
	need(t, "systemd-socket-activate")
	port := freePort(t)
	notifyPath := filepath.Join(socketDir(t), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	states := make(chan string, 8)
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := notify.ReadFromUnix(buf)
			if err != nil {
				return
			}
			states <- string(buf[:n])
		}
	}()
	cmd := exec.Command("systemd-socket-activate", "-l", fmt.Sprintf("127.0.0.1:%d", port), "-E", "NOTIFY_SOCKET="+notifyPath,
		bin(t, "redirect80"), "-q")
	p := start(t, cmd)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitFor(t, 10*time.Second, "systemd-socket-activate to listen", func() bool {
		return strings.Contains(p.Output(), "Listening on") || p.Exited()
	})
	// The first connection starts redirect80 on the inherited socket.
	resp, _ := rawExchange(t, addr, "GET /activated?x HTTP/1.1\r\nHost: sa.test\r\n\r\n", "GET")
	if resp.Header.Get("Location") != "https://sa.test/activated?x" {
		t.Fatalf("through socket activation: %d %q\n%s", resp.StatusCode, resp.Header.Get("Location"), p.Output())
	}
	select {
	case s := <-states:
		if !strings.Contains(s, "READY=1") {
			t.Errorf("first notification %q, want READY=1", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no READY=1 notification")
	}
	if strings.Contains(p.Output(), "msg=request") {
		t.Errorf("-q still logged requests:\n%s", p.Output())
	}
	// An idle kept-alive connection does not hold up the stop.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: sa.test\r\n\r\n")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if _, _, err := readResponse(br, "GET"); err != nil {
		t.Fatal(err)
	}
	p.Signal(t, syscall.SIGTERM)
	if err := p.Wait(t, 8*time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, p.Output())
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle connection not closed at shutdown: %v", err)
	}
	select {
	case s := <-states:
		if !strings.Contains(s, "STOPPING=1") {
			t.Errorf("second notification %q, want STOPPING=1", s)
		}
	case <-time.After(5 * time.Second):
		t.Error("no STOPPING=1 notification")
	}
}

// TestRedirect80Usage checks exit statuses and messages.
func TestRedirect80Usage(t *testing.T) {
	b := bin(t, "redirect80")
	for _, tc := range []struct {
		args   []string
		status int
		msg    string
	}{
		{[]string{"-version"}, 0, "redirect80 "},
		{[]string{"-h"}, 0, "-acme"},
		{[]string{"-nosuchflag"}, 2, "nosuchflag"},
		{[]string{"extra"}, 2, "unexpected argument"},
		{[]string{"-listen", "tcp:99999"}, 2, "-listen"},
		{[]string{"-acme", "ftp"}, 2, "-acme"},
		{[]string{"-acme", "unix:"}, 2, "-acme"},
		{[]string{"-acme", "tcp"}, 2, "-backend-cidr"},
		{[]string{"-acme", "tcp", "-backend-cidr", "10.0.0.1/8"}, 2, "-backend-cidr"},
		{[]string{"-backend-cidr", "10.0.0.0/8"}, 2, "-backend-cidr"},
		{[]string{"-acme-port", "0"}, 2, "-acme-port"},
		{[]string{"-header-timeout", "0s"}, 2, "-header-timeout"},
		{[]string{"-idle-timeout", "-1s"}, 2, "-idle-timeout"},
		{[]string{"-max-header-bytes", "10"}, 2, "-max-header-bytes"},
		{[]string{"-max-conns", "-1"}, 2, "-max-conns"},
		{[]string{"-log-format", "xml"}, 2, "-log-format"},
	} {
		cmd := exec.Command(b, tc.args...)
		out, err := cmd.CombinedOutput()
		status := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if status != tc.status || !strings.Contains(string(out), tc.msg) {
			t.Errorf("redirect80 %v: status %d, output %q; want %d and %q", tc.args, status, out, tc.status, tc.msg)
		}
	}
	// A port already taken is a run-time failure.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = exec.Command(b, "-listen", "tcp:"+ln.Addr().String()).Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("listening on a taken port: %v, want exit status 1", err)
	}
}

// TestRedirect80JSONLog checks the JSON log line of a request.
func TestRedirect80JSONLog(t *testing.T) {
	r := startRedirect80(t, "-listen", "tcp:127.0.0.1:0", "-log-format", "json")
	rawExchange(t, r.Addr(), "GET /j?k=v HTTP/1.1\r\nHost: j.test\r\nConnection: close\r\n\r\n", "GET")
	rawResponse(t, r.Addr(), "GET / HTTP/1.1\r\nHost: bad..test\r\n\r\n")
	var lines []map[string]any
	waitFor(t, 5*time.Second, "two request log lines", func() bool {
		lines = lines[:0]
		for _, l := range logLines(r.Proc, `"msg":"request"`) {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("log line is not JSON: %q", l)
			}
			lines = append(lines, m)
		}
		return len(lines) >= 2
	})
	ok, bad := lines[0], lines[1]
	if ok["host"] != "j.test" || ok["method"] != "GET" || ok["path"] != "/j?k=v" || ok["status"] != 301.0 || !strings.HasPrefix(ok["client"].(string), "127.0.0.1:") {
		t.Errorf("redirect log line: %v", ok)
	}
	if bad["host"] != "bad..test" || bad["status"] != 400.0 || bad["error"] != "invalid host" {
		t.Errorf("refusal log line: %v", bad)
	}
}
