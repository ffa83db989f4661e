package redirect

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
)

// BenchmarkParseAndAnswer measures the per-request work without the
// network: parse a typical browser request and append its redirect.
func BenchmarkParseAndAnswer(b *testing.B) {
	head := []byte("GET /articles/2026/11/some-title?utm_source=feed&id=42 HTTP/1.1\r\n" +
		"Host: www.example.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n" +
		"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n")
	var req request
	var c clock
	var cache hostCache
	out := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		if err := parseRequest(head, &req, &cache); err != nil {
			b.Fatal(err)
		}
		out = appendRedirect(out[:0], &req, c.date(), true)
	}
}

// BenchmarkServeKeepAlive measures requests on one kept-alive loopback
// connection through the whole server.
func BenchmarkServeKeepAlive(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := New(Config{Quiet: true})
	go s.Serve(ln)
	defer s.Shutdown(b.Context())
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /x?y=1 HTTP/1.1\r\nHost: bench.test\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		c.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
