package tests

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/snitools/snitools/lib/nat46"
)

func TestSnilistenTCPMode(t *testing.T) {
	if !inNetns(t) {
		return
	}
	netnsSetup(t,
		[]string{"192.0.2.1/32", "192.0.2.2/32", "192.0.2.10/32", "198.51.100.10/32", "198.51.100.11/32", "198.51.100.12/32", "198.51.100.13/32", "203.0.113.5/32", "2001:db8:5ba7::10/128"},
		"127.0.0.1 localhost\n"+
			"198.51.100.10 v4.example.test\n"+
			"2001:db8:5ba7::10 v6.example.test\n"+
			"198.51.100.11 pp.example.test\n"+
			"198.51.100.12 xmpp.example.test\n"+
			"203.0.113.5 evil.example.test\n"+
			"127.0.0.1 lo.example.test\n"+
			"192.0.2.1 loop.example.test\n",
		"nameserver 127.0.0.53\noptions timeout:2 attempts:1\n")
	var flips atomic.Int64
	dnsServer(t, func(q dns.Question) []dns.RR {
		switch {
		case q.Name == "_xmpps-client._tcp.chat.example.test." && q.Qtype == dns.TypeSRV:
			return []dns.RR{rr(t, "_xmpps-client._tcp.chat.example.test. 60 IN SRV 0 0 5223 xmpp.example.test.")}
		case q.Name == "flip.example.test." && q.Qtype == dns.TypeA:
			if flips.Add(1)%2 == 0 {
				return []dns.RR{rr(t, "flip.example.test. 0 IN A 198.51.100.13")}
			}
			return []dns.RR{rr(t, "flip.example.test. 0 IN A 203.0.113.5")}
		}
		return nil
	})
	tcpBackend(t, "198.51.100.10:443", "v4", false)
	tcpBackend(t, "[2001:db8:5ba7::10]:443", "v6", false)
	tcpBackend(t, "198.51.100.11:443", "pp", true)
	tcpBackend(t, "198.51.100.12:5223", "xmpp", false)
	tcpBackend(t, "198.51.100.13:443", "flip", false)
	forbidden := watchListener(t, "203.0.113.5:443")
	forbiddenLo := watchListener(t, "127.0.0.1:443")

	cidrs := []string{"-backend-cidr", "198.51.100.0/24", "-backend-cidr", "2001:db8:5ba7::/64", "-backend-cidr", "192.0.2.0/24"}
	s := startSnilistenOn(t, "tcp:192.0.2.1:443", append([]string{"-mode", "tcp"}, cidrs...)...)
	sp := startSnilistenOn(t, "tcp:192.0.2.2:443", append([]string{"-mode", "tcp", "-proxy-proto"}, cidrs...)...)

	for _, tc := range []struct{ sni, want string }{{"v4.example.test", "backend=v4"}, {"v6.example.test", "backend=v6"}} {
		body, err := getFrom(t, "192.0.2.10", s.Addr, tc.sni)
		if err != nil || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %v\n%s", tc.sni, err, body)
		}
	}
	// PROXY v2: the backend sees the client's address.
	body, err := getFrom(t, "192.0.2.10", sp.Addr, "pp.example.test")
	if err != nil || !strings.Contains(body, "backend=pp") || !strings.Contains(body, "remote=192.0.2.10:") {
		t.Errorf("PROXY v2 in tcp mode: %v\n%s", err, body)
	}
	// SRV for a sole xmpp-client ALPN.
	body, err = getFrom(t, "", s.Addr, "chat.example.test", "xmpp-client")
	if err == nil {
		if !strings.Contains(body, "backend=xmpp") {
			t.Errorf("xmpp-client SRV: reached %s", body)
		}
	} else if !strings.Contains(err.Error(), "no application protocol") {
		// The backend speaks only http/1.1, so the handshake may fail on
		// ALPN: that it got as far as the backend proves the routing.
		t.Errorf("xmpp-client SRV: %v", err)
	}
	waitLog(t, s.Proc, "sni=chat.example.test", "backend=198.51.100.12:5223")

	// Refusals: outside the CIDRs, loopback, the proxy itself, NXDOMAIN.
	for _, name := range []string{"evil.example.test", "lo.example.test", "loop.example.test", "nxdomain.example.test"} {
		_, err := getFrom(t, "", s.Addr, name)
		if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("%s: want unrecognized_name, got %v", name, err)
		}
	}
	waitLog(t, s.Proc, "sni=loop.example.test", "outcome=refused_cidr", "own listening address")
	waitLog(t, s.Proc, "sni=evil.example.test", "outcome=refused_cidr", "203.0.113.5")
	waitLog(t, s.Proc, "sni=nxdomain.example.test", "outcome=unknown_name")

	// A DNS answer that flips between allowed and forbidden addresses:
	// the forbidden one is never dialled.
	served, refused := 0, 0
	for range 10 {
		body, err := getFrom(t, "", s.Addr, "flip.example.test")
		switch {
		case err == nil && strings.Contains(body, "backend=flip"):
			served++
		case err != nil && strings.Contains(err.Error(), "unrecognized name"):
			refused++
		default:
			t.Errorf("flip: %v %s", err, body)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if *forbidden != 0 || *forbiddenLo != 0 {
		t.Fatalf("forbidden addresses were dialled: 203.0.113.5 %d times, 127.0.0.1 %d times", *forbidden, *forbiddenLo)
	}
	if served == 0 || refused == 0 {
		t.Errorf("flip: served %d, refused %d; want both", served, refused)
	}
}

func TestSnilistenNAT46Mode(t *testing.T) {
	if !inNetns(t) {
		return
	}
	netnsSetup(t,
		[]string{"192.0.2.1/32", "192.0.2.10/32", "2001:db8:5ba7::10/128", "2001:db8:bad::1/128"},
		"127.0.0.1 localhost\n"+
			"2001:db8:5ba7::10 app.example.test\n192.0.2.1 app.example.test\n"+
			"2001:db8:bad::1 evil.example.test\n192.0.2.1 evil.example.test\n",
		"nameserver 127.0.0.53\n")
	seenBy := startBackend(t, "tcp", "[2001:db8:5ba7::10]:443", "app", backendOpts{}).Requests
	forbidden := watchListener(t, "[2001:db8:bad::1]:443")

	s := startSnilistenOn(t, "tcp:192.0.2.1:443", "-mode", "nat46", "-nat46-prefix", "64:ff9b:1::", "-backend-cidr", "2001:db8:5ba7::/80", "-listen", "tcp:[::1]:443")

	body, err := getFrom(t, "192.0.2.10", s.Addr, "app.example.test")
	if err != nil || !strings.Contains(body, "backend=app") {
		t.Fatalf("nat46: %v\n%s", err, body)
	}
	want, _ := nat46.DefaultPrefix.Embed(netip.MustParseAddr("192.0.2.10"))
	got := seenBy()[0]
	host, _, _ := net.SplitHostPort(got)
	if host != want.String() {
		t.Errorf("backend saw the client as %s, want the embedded address %s", host, want)
	}
	if want.String() != "64:ff9b:1::c000:20a" {
		t.Errorf("embedding of 192.0.2.10 is %s", want)
	}

	// Outside the CIDRs: refused and never dialled.
	if _, err := getFrom(t, "192.0.2.10", s.Addr, "evil.example.test"); err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Errorf("evil.example.test: want unrecognized_name, got %v", err)
	}
	if *forbidden != 0 {
		t.Errorf("a backend outside -backend-cidr was dialled %d times", *forbidden)
	}
	// A client over IPv6 is refused: it should connect directly.
	if _, err := getFrom(t, "", "[::1]:443", "app.example.test"); err == nil {
		t.Errorf("IPv6 client was served in nat46 mode")
	}
	waitLog(t, s.Proc, "client=[::1]:", "came over IPv6")
}

// TestSnilistenTCPSlowBackend: in tcp mode the backend's handshake is
// usually over when connect returns (on this machine it always is), so a
// backend that answers late takes the other path, waiting on the poller.
// A listener whose accept queue is full drops SYNs, and the client's
// kernel retries after a second: snilisten gives up at -connect-timeout
// with internal_error (outcome backend_error), or relays once the backend
// accepts again; a closed port is refused at once.
func TestSnilistenTCPSlowBackend(t *testing.T) {
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(lfd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(lfd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(lfd), "backend")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	// Fill the accept queue: a connection that stays there, then one
	// whose SYN is dropped.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 300*time.Millisecond)
		if err != nil {
			break
		}
		defer c.Close()
		if i == 10 {
			t.Skip("the accept queue does not fill up")
		}
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	for _, tc := range []struct {
		name string
		port int
		wait time.Duration
	}{
		{"refused", closedPort, 0},
		{"timeout", port, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSnilisten(t, "-mode", "tcp", "-backend-cidr", "127.0.0.0/8", "-backend-port", fmt.Sprint(tc.port), "-connect-timeout", "2s")
			start := time.Now()
			_, err := tlsDial(t, s.Addr, "localhost")
			if err == nil || !strings.Contains(err.Error(), "internal error") {
				t.Fatalf("handshake: %v, want an internal_error alert", err)
			}
			if took := time.Since(start); took < tc.wait || took > tc.wait+3*time.Second {
				t.Errorf("refused after %v, want about %v", took, tc.wait)
			}
			waitLog(t, s.Proc, "sni=localhost", "outcome=backend_error")
		})
	}

	t.Run("late", func(t *testing.T) {
		s := startSnilisten(t, "-mode", "tcp", "-backend-cidr", "127.0.0.0/8", "-backend-port", fmt.Sprint(port), "-connect-timeout", "10s")
		before := socketCount(t, s.Cmd.Process.Pid)
		go func() {
			time.Sleep(500 * time.Millisecond)
			serveHTTPS(t, ln, "late") // accepts the queue, and the retried SYN gets in
		}()
		start := time.Now()
		body, err := httpsGet(t, s.Addr, "localhost", "/")
		if err != nil || !strings.Contains(body, "backend=late") {
			t.Fatalf("through a late backend: %v %q", err, body)
		}
		if took := time.Since(start); took < 500*time.Millisecond {
			t.Errorf("answered after %v, before the backend accepted", took)
		}
		waitFor(t, 10*time.Second, "snilisten back at its sockets", func() bool { return socketCount(t, s.Cmd.Process.Pid) == before })
	})
}
