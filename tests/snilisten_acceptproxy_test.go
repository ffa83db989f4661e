package tests

// snilisten -accept-proxy: a PROXY header from a trusted front names the
// client; from anyone else it is refused as not TLS.

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// TestSnilistenSpoofedProxyHeader: a PROXY header is believed only from
// an -accept-proxy network. From anywhere else it is what it is, not a
// ClientHello: the connection is closed and the claimed address appears
// nowhere. A trusted front must send a valid header naming a client.
func TestSnilistenSpoofedProxyHeader(t *testing.T) {
	dir := socketDir(t)
	rb := startBackend(t, "unix", filepath.Join(dir, "web.example.test"), "web.example.test", backendOpts{Proxy: true})
	s, maddr := startSnilistenMetrics(t, "-unix-directory", dir, "-proxy-proto", "-accept-proxy", "127.0.0.1/32", "-peek-timeout", "500ms")
	const forged = "203.0.113.77"

	// The forger on 127.0.0.3, header v1 and v2, then a real handshake.
	for _, v := range []byte{1, 2} {
		c := dialFrom(t, "127.0.0.3", s.Addr)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(proxyHeaderBytes(t, v, forged+":5555", s.Addr))
		tc := tls.Client(c, testPKI(t).ClientConfig("web.example.test"))
		if err := tc.Handshake(); err == nil {
			t.Errorf("v%d: handshake completed behind a forged header", v)
		}
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("v%d: connection still open", v)
		}
	}
	// Controls: the same client without a header is served as itself, and
	// the trusted front's header is believed (so the test can tell).
	if body, err := getFrom(t, "127.0.0.3", s.Addr, "web.example.test"); err != nil || !strings.Contains(body, "remote=127.0.0.3:") {
		t.Fatalf("plain client on 127.0.0.3: %v\n%s", err, body)
	}
	const genuine = "198.51.100.77"
	for _, v := range []byte{1, 2} {
		body := getBehindHeader(t, "127.0.0.1", s.Addr, proxyHeaderBytes(t, v, genuine+":4444", s.Addr), 0, "web.example.test")
		if !strings.Contains(body, "remote="+genuine+":4444") {
			t.Fatalf("v%d from the trusted front: backend did not see %s:\n%s", v, genuine, body)
		}
	}
	// A header dribbled in one byte at a time is still read whole, and
	// nothing after it is lost.
	body := getBehindHeader(t, "127.0.0.1", s.Addr, proxyHeaderBytes(t, 1, genuine+":4445", s.Addr), 3*time.Millisecond, "web.example.test")
	if !strings.Contains(body, "remote="+genuine+":4445") {
		t.Fatalf("dribbled v1 header: backend did not see %s:\n%s", genuine, body)
	}

	waitFor(t, 5*time.Second, "every connection logged", func() bool { return len(logLines(s.Proc, "msg=connection")) == 6 })
	if n := len(logLines(s.Proc, "client=127.0.0.3:", "outcome=not_tls")); n != 2 {
		t.Errorf("%d not_tls lines for the forger, want 2", n)
	}
	if strings.Contains(s.Output(), forged) {
		t.Errorf("the forged address appears in the log:\n%s", s.Output())
	}
	for _, a := range rb.Conns() {
		if strings.Contains(a, forged) {
			t.Errorf("the backend was told about the forged address: %s", a)
		}
	}
	if n := len(rb.Conns()); n != 4 {
		t.Errorf("backend saw %d connections %q, want the 4 controls", n, rb.Conns())
	}
	if n := len(logLines(s.Proc, "client="+genuine+":", "front=127.0.0.1:", "outcome=ok")); n != 3 {
		t.Errorf("%d log lines with the announced client and the front, want 3", n)
	}

	// The trusted front misbehaving: every such connection is closed
	// without a word, logged and counted as proxy_header_error; a LOCAL
	// command (v2 LOCAL, v1 UNKNOWN) is a health check: closed, counted
	// as health_check and not logged.
	v2, _ := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	for _, c := range []struct {
		name    string
		payload []byte
	}{
		{"no header", rawHello("web.example.test")},
		{"malformed v1", append([]byte("PROXY TCP4 not.an.address 127.0.0.1 1 443\r\n"), rawHello("web.example.test")...)},
		{"truncated v2", append(bytes.Clone(v2[:14]), 0xff, 0xff)},
		{"v2 LOCAL", append(v2, rawHello("web.example.test")...)},
		{"v1 UNKNOWN", append([]byte("PROXY UNKNOWN\r\n"), rawHello("web.example.test")...)},
		{"silence", nil}, // until the peek timeout
	} {
		if reply := rawFrom(t, "127.0.0.1", s.Addr, c.payload); len(reply) != 0 {
			t.Errorf("%s: want a silent close, got %q", c.name, reply)
		}
	}
	m := waitScrape(t, maddr, "4 proxy_header_error and 2 health_check", func(m *scrape) bool {
		return m.outcome("proxy_header_error") == 4 && m.outcome("health_check") == 2
	})
	if n := len(logLines(s.Proc, "client=127.0.0.1:", "outcome=proxy_header_error")); n != 4 {
		t.Errorf("%d proxy_header_error log lines, want 4", n)
	}
	if n := len(logLines(s.Proc, "outcome=health_check")); n != 0 {
		t.Errorf("%d health checks logged, want none", n)
	}
	if n := len(rb.Conns()); n != 4 {
		t.Errorf("the backend saw connections from a misbehaving front: %q", rb.Conns())
	}
	if got := m.outcome("not_tls"); got != 2 {
		t.Errorf("not_tls = %v, want 2 (the forged headers)", got)
	}
}

// getBehindHeader connects from src to addr, writes header (a byte at a
// time every pace, if pace is set), then makes one HTTPS request for sni
// on the same connection and returns the response.
func getBehindHeader(t *testing.T, src, addr string, header []byte, pace time.Duration, sni string) string {
	t.Helper()
	c := dialFrom(t, src, addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if pace == 0 {
		c.Write(header)
	} else {
		for _, b := range header {
			c.Write([]byte{b})
			time.Sleep(pace)
		}
	}
	tc := tls.Client(c, testPKI(t).ClientConfig(sni))
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
	body, err := io.ReadAll(tc)
	c.Close() // the relay ends when both directions have
	if err != nil && len(body) == 0 {
		t.Fatalf("request behind a PROXY header: %v", err)
	}
	return string(body)
}

// TestSnilistenAcceptProxyHandoff: a handoff backend behind an instance
// that trusts its front learns the client from the front's header as the
// connection's RemoteAddr, though the socket's peer is the front.
func TestSnilistenAcceptProxyHandoff(t *testing.T) {
	dir := socketDir(t)
	handoffHTTPS(t, dir, "direct.example.test")
	s := startSnilisten(t, "-unix-directory", dir, "-accept-proxy", "127.0.0.0/30")
	for _, v := range []byte{1, 2} {
		src := fmt.Sprintf("198.51.100.%d:%d", 70+v, 4000+int(v))
		body := getBehindHeader(t, "127.0.0.2", s.Addr, proxyHeaderBytes(t, v, src, "192.0.2.1:443"), 0, "direct.example.test")
		if !strings.Contains(body, "mode=handoff") || !strings.Contains(body, "remote="+src+"\n") {
			t.Errorf("v%d: handed-off backend did not see %s:\n%s", v, src, body)
		}
		waitLog(t, s.Proc, "client="+src, "front=127.0.0.2:", "outcome=handoff")
	}
	// Outside the trusted network the same connection is not believed.
	if reply := rawFrom(t, "127.0.0.5", s.Addr, append(proxyHeaderBytes(t, 2, "198.51.100.99:1", "192.0.2.1:443"), rawHello("direct.example.test")...)); len(reply) != 0 {
		t.Errorf("forged header from 127.0.0.5: got %q", reply)
	}
	waitLog(t, s.Proc, "client=127.0.0.5:", "outcome=not_tls")
	if strings.Contains(s.Output(), "198.51.100.99") {
		t.Errorf("the forged address appears in the log")
	}
}
