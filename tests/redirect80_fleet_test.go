package tests

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

// exchangeFrom connects from src, writes header and then request, and
// reads one response: status and Location.
func exchangeFrom(t *testing.T, src, addr string, header []byte, request string) (int, string) {
	t.Helper()
	c := dialFrom(t, src, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(append(append([]byte{}, header...), request...)); err != nil {
		t.Fatal(err)
	}
	resp, _, err := readResponse(bufio.NewReader(c), "GET")
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp.StatusCode, resp.Header.Get("Location")
}

// TestRedirect80BehindFront: behind a trusted front, the client address
// in the PROXY header is the client everywhere (log, ACME forwarding); a
// header from anywhere else is never believed; health checks are counted
// and not logged; the metrics count answers by status code.
func TestRedirect80BehindFront(t *testing.T) {
	dir := socketDir(t)
	backend := unixACME(t, dir, "a.test")
	r := startRedirect80(t, "-listen", "tcp:0.0.0.0:0", "-accept-proxy", "127.0.0.1/32",
		"-acme", "unix:"+dir, "-metrics-listen", "127.0.0.1:0", "-header-timeout", "2s")
	port := r.Addr()[strings.LastIndexByte(r.Addr(), ':')+1:]
	addr := "127.0.0.1:" + port
	m := metricsAddrRE.FindStringSubmatch(r.Output())
	if m == nil {
		t.Fatalf("no metrics address in:\n%s", r.Output())
	}
	maddr := m[1]
	const announced, forged = "192.0.2.50", "203.0.113.77"

	// Through the front (127.0.0.1): the announced client is believed.
	hdr := proxyHeaderBytes(t, 2, announced+":4321", "127.0.0.1:80")
	status, loc := exchangeFrom(t, "127.0.0.1", addr, hdr, "GET /x?y HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
	if status != 301 || loc != "https://a.test/x?y" {
		t.Errorf("behind the front: %d %q", status, loc)
	}
	waitLog(t, r.Proc, "client="+announced+":4321", "front=127.0.0.1:", "status=301")
	// An ACME challenge is forwarded with the announced client.
	status, _ = exchangeFrom(t, "127.0.0.1", addr, proxyHeaderBytes(t, 1, announced+":4322", "127.0.0.1:80"),
		"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
	backend.mu.Lock()
	xff := backend.last.Get("X-Forwarded-For")
	backend.mu.Unlock()
	if status != 200 || xff != announced {
		t.Errorf("ACME behind the front: status %d, X-Forwarded-For %q, want 200 and %s", status, xff, announced)
	}

	// From an untrusted address the header is just bytes of a bad request.
	status, loc = exchangeFrom(t, "127.0.0.3", addr, proxyHeaderBytes(t, 1, forged+":1", "127.0.0.1:80"),
		"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if status != 400 || loc != "" {
		t.Errorf("forged v1 header from 127.0.0.3: %d %q, want 400 without Location", status, loc)
	}
	reply := rawFrom(t, "127.0.0.3", addr, append(proxyHeaderBytes(t, 2, forged+":1", "127.0.0.1:80"), "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"...))
	if strings.Contains(string(reply), "Location") {
		t.Errorf("forged v2 header: answered with a Location:\n%s", reply)
	}
	waitLog(t, r.Proc, "client=127.0.0.3:")
	if strings.Contains(r.Output(), "client="+forged) {
		t.Errorf("the forged address is logged as a client:\n%s", r.Output())
	}

	// The front's health check (LOCAL) and a front without a header.
	local := []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
	if reply := rawFrom(t, "127.0.0.1", addr, local); len(reply) != 0 {
		t.Errorf("health check answered %q", reply)
	}
	if reply := rawFrom(t, "127.0.0.1", addr, []byte("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")); len(reply) != 0 {
		t.Errorf("front without a header answered %q", reply)
	}
	sc := waitScrape(t, maddr, "the answers counted", func(s *scrape) bool {
		return s.value("redirect80_front_connections_total", "outcome", "health_check") == 1 &&
			s.value("redirect80_front_connections_total", "outcome", "error") == 1
	})
	for _, c := range []struct {
		name  string
		label []string
		want  float64
	}{
		{"redirect80_requests_total", []string{"code", "301"}, 1},
		{"redirect80_requests_total", []string{"code", "400"}, 2},
		{"redirect80_requests_total", []string{"code", "2xx"}, 1},
		{"redirect80_acme_challenges_total", []string{"result", "forwarded"}, 1},
		{"redirect80_front_connections_total", []string{"outcome", "ok"}, 2},
	} {
		if got := sc.value(c.name, c.label...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.label, got, c.want)
		}
	}
	promtoolCheckMetrics(t, sc.raw)
	if n := len(logLines(r.Proc, "front=127.0.0.1:", "error=")); n != 1 {
		t.Errorf("%d log lines for the front's bad connection, want 1 (the health check is not logged):\n%s", n, r.Output())
	}
}
