package tests

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
