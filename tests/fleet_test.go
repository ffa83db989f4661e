package tests

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/snitools/snitools/lib/nat46"
)

// fleetArgs is the one command line every instance of the fleet runs,
// apart from the socket directory: each listens on a free loopback port
// and serves its metrics on another.
func fleetArgs(dir string) []string {
	return []string{"-unix-directory", dir, "-proxy-proto", "-accept-proxy", "127.0.0.1/32",
		"-peek-timeout", "2s", "-shutdown-timeout", "30s", "-metrics-per-backend"}
}

// TestFleetHAProxy: two identical snilisten instances behind HAProxy in
// TCP mode (round robin, PROXY v2, health checks). Both serve; the
// backend sees the real client through both hops; SIGTERM on one drains
// its transfers to the last byte while HAProxy takes it out, and new
// connections keep succeeding through the other.
func TestFleetHAProxy(t *testing.T) {
	need(t, "haproxy")
	dir := socketDir(t)
	unixBackend(t, dir, "web.example.test", true)
	startBackend(t, "unix", filepath.Join(dir, "echo.example.test"), "echo.example.test", backendOpts{Mode: modeEcho, Proxy: true})
	s1, m1 := startSnilistenMetrics(t, fleetArgs(dir)...)
	s2, m2 := startSnilistenMetrics(t, fleetArgs(dir)...)
	front := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// Checks slow enough that HAProxy still has a stopped instance up for
	// a while: connections sent to it meanwhile must be retried elsewhere.
	h := startHAProxy(t, front, map[string]string{"s1": s1.Addr, "s2": s2.Addr}, "inter 1s fall 3")

	// A client on 127.0.0.2: HAProxy (127.0.0.1) -> snilisten -> backend,
	// which learns 127.0.0.2 from snilisten's PROXY header.
	const requests = 6
	for i := range requests {
		body, err := getFrom(t, "127.0.0.2", front, "web.example.test")
		if err != nil || !strings.Contains(body, "backend=web.example.test") || !strings.Contains(body, "remote=127.0.0.2:") {
			t.Fatalf("request %d through HAProxy: %v\n%s", i, err, body)
		}
	}
	// Connections that reached the backend, whatever their outcome (a
	// reset as the client closes can make one a relay_error).
	served := func(addr string) float64 {
		return scrapeMetrics(t, addr).value("snilisten_backend_connections_total", "backend", "web.example.test")
	}
	var counts [2]float64
	waitFor(t, 10*time.Second, "both instances to count the requests", func() bool {
		counts = [2]float64{served(m1), served(m2)}
		return counts[0]+counts[1] >= requests
	})
	if counts[0] < 1 || counts[1] < 1 || counts[0]+counts[1] != requests {
		t.Errorf("connections served per instance %v, want both serving, %d in all", counts, requests)
	}
	for i, s := range []*snilisten{s1, s2} {
		if len(logLines(s.Proc, "client=127.0.0.2:", "front=127.0.0.1:", "sni=web.example.test")) == 0 {
			t.Errorf("instance %d: no log line with the client from the header and the front", i+1)
		}
		if n := len(logLines(s.Proc, "client=127.0.0.1:", "sni=web.example.test")); n > 0 {
			t.Errorf("instance %d: %d connections served under the front's address", i+1, n)
		}
	}
	// HAProxy's health checks come with a PROXY header of the LOCAL
	// command: counted as health_check, neither logged nor errors.
	for i, m := range []string{m1, m2} {
		sc := waitScrape(t, m, "a health check", func(m *scrape) bool { return m.outcome("health_check") > 0 })
		if sc.outcome("proxy_header_error") != 0 {
			t.Errorf("instance %d: %v proxy_header_error; want health checks counted as health_check only",
				i+1, sc.outcome("proxy_header_error"))
		}
	}

	// Slow transfers through both instances; then SIGTERM to one.
	const transfers, chunks, chunk = 4, 32, 64 << 10
	var trs []*transfer
	for i := range transfers {
		c := dialFrom(t, "127.0.0.2", front)
		trs = append(trs, startTransfer(c, "echo.example.test", byte(i), chunks, chunk, 15*time.Millisecond))
	}
	for _, tr := range trs {
		select {
		case <-tr.started:
		case <-time.After(20 * time.Second):
			t.Fatal("transfers did not get going")
		}
	}
	active := [2]float64{scrapeMetrics(t, m1).value("snilisten_connections_active"), scrapeMetrics(t, m2).value("snilisten_connections_active")}
	victim, survivor, vname, sm := s1, s2, "s1", m2
	if active[0] < 1 {
		victim, survivor, vname, sm = s2, s1, "s2", m1
	}
	t.Logf("active connections %v: stopping %s", active, vname)
	victim.Signal(t, syscall.SIGTERM)
	waitFor(t, 5*time.Second, "the stopped instance to close its listener", func() bool {
		c, err := net.DialTimeout("tcp", victim.Addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// While HAProxy still counts the stopped instance up, the connections
	// it sends there are refused and retried on the other: none fails.
	for i := range 4 {
		body, err := getFrom(t, "127.0.0.2", front, "web.example.test")
		if err != nil || !strings.Contains(body, "remote=127.0.0.2:") {
			t.Fatalf("request %d right after SIGTERM: %v\n%s", i, err, body)
		}
	}
	if st := h.status(t, vname); !strings.HasPrefix(st, "UP") {
		t.Logf("HAProxy already had %s %s: the retries were not needed", vname, st)
	}
	for i, tr := range trs {
		select {
		case err := <-tr.done:
			if err != nil {
				t.Errorf("transfer %d: %v", i, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("transfer %d did not finish", i)
		}
	}
	if err := victim.Wait(t, 20*time.Second); err != nil {
		t.Errorf("stopped instance exit: %v (want 0)", err)
	}
	if n := len(logLines(victim.Proc, "sni=echo.example.test", "client=127.0.0.2:", "outcome=ok")); n < 1 {
		t.Errorf("stopped instance logged %d drained transfers", n)
	}

	// HAProxy's checks see the stopped instance down; from then on every
	// new connection is served by the other.
	h.waitStatus(t, vname, "DOWN")
	before := served(sm)
	const after = 6
	for i := range after {
		body, err := getFrom(t, "127.0.0.2", front, "web.example.test")
		if err != nil || !strings.Contains(body, "remote=127.0.0.2:") {
			t.Fatalf("request %d with one instance down: %v\n%s", i, err, body)
		}
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("the surviving instance to serve %d more", after), func() bool {
		return served(sm) == before+after
	})
	if survivor.Exited() {
		t.Errorf("the surviving instance exited:\n%s", survivor.Output())
	}
}

// TestFleetHAProxyNAT46: behind HAProxy, nat46 mode embeds the client
// address from the incoming PROXY header (not HAProxy's) in the IPv6
// source address the backend sees.
func TestFleetHAProxyNAT46(t *testing.T) {
	if !inNetns(t) {
		return
	}
	need(t, "haproxy")
	netnsSetup(t, []string{"192.0.2.1/32", "192.0.2.10/32", "2001:db8:5ba7::10/128"},
		"127.0.0.1 localhost\n2001:db8:5ba7::10 app.example.test\n", "nameserver 127.0.0.53\n")
	seenBy := startBackend(t, "tcp", "[2001:db8:5ba7::10]:443", "app", backendOpts{}).Requests

	args := []string{"-mode", "nat46", "-nat46-prefix", "64:ff9b:1::/96", "-backend-cidr", "2001:db8:5ba7::/64", "-accept-proxy", "127.0.0.1/32", "-metrics-per-backend"}
	s1, m1 := startSnilistenMetrics(t, args...)
	s2, m2 := startSnilistenMetrics(t, args...)
	startHAProxy(t, "192.0.2.1:443", map[string]string{"s1": s1.Addr, "s2": s2.Addr}, "inter 100ms fall 2")
	const requests = 4
	for i := range requests {
		body, err := getFrom(t, "192.0.2.10", "192.0.2.1:443", "app.example.test")
		if err != nil || !strings.Contains(body, "backend=app") {
			t.Fatalf("request %d: %v\n%s", i, err, body)
		}
	}
	want, _ := nat46.DefaultPrefix.Embed(netip.MustParseAddr("192.0.2.10"))
	if want.String() != "64:ff9b:1::c000:20a" {
		t.Fatalf("embedding of 192.0.2.10 is %s", want)
	}
	seen := seenBy()
	if len(seen) != requests {
		t.Fatalf("backend saw %d requests, want %d", len(seen), requests)
	}
	for _, a := range seen {
		if host, _, _ := net.SplitHostPort(a); host != want.String() {
			t.Errorf("backend saw the client as %s, want %s (192.0.2.10 from the header, embedded)", a, want)
		}
	}
	backend := "[2001:db8:5ba7::10]:443"
	a := scrapeMetrics(t, m1).value("snilisten_backend_connections_total", "backend", backend)
	b := scrapeMetrics(t, m2).value("snilisten_backend_connections_total", "backend", backend)
	if a < 1 || b < 1 {
		t.Errorf("connections to %s per instance %v and %v: want both serving", backend, a, b)
	}
}

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
