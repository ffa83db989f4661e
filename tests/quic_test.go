package tests

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/snitools/snitools/lib/quic/quictest"
)

// TestQUICTCPMode routes real HTTP/3 exchanges (quic-go client and
// servers) through snilisten on UDP in tcp mode: by name to the right one
// of two backends, with the client's multi-datagram post-quantum hello,
// from a wildcard socket that must answer from the address the client
// sent to, and refuses names outside -backend-cidr or without a backend.
func TestQUICTCPMode(t *testing.T) {
	if !inNetns(t) {
		return
	}
	netnsSetup(t,
		[]string{"192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32", "192.0.2.10/32", "198.51.100.10/32", "198.51.100.11/32", "203.0.113.5/32",
			"2001:db8:5ba7::10/128", "2001:db8:1::1/128", "2001:db8:1::2/128", "2001:db8:1::10/128"},
		"127.0.0.1 localhost\n"+
			"192.0.2.3 loop.example.test\n"+
			"198.51.100.10 v4.example.test\n"+
			"198.51.100.11 other.example.test\n"+
			"2001:db8:5ba7::10 v6.example.test\n"+
			"203.0.113.5 evil.example.test\n"+
			"198.51.100.99 down.example.test\n",
		"nameserver 127.0.0.53\noptions timeout:1 attempts:1\n")
	dnsServer(t, func(q dns.Question) []dns.RR { return nil })
	h3Backend(t, "198.51.100.10:8443", "v4")
	h3Backend(t, "198.51.100.11:8443", "other")
	h3Backend(t, "[2001:db8:5ba7::10]:8443", "v6")
	h3Backend(t, "203.0.113.5:8443", "evil")
	cidrs := []string{"-backend-port", "8443", "-backend-cidr", "198.51.100.0/24", "-backend-cidr", "2001:db8:5ba7::/64"}
	// A wildcard socket: answers must leave from 192.0.2.2 when the
	// client sent there, or its connected socket drops them.
	s := startSnilistenOn(t, "udp:0.0.0.0:443", append([]string{"-mode", "tcp", "-quic-idle-timeout", "2s"}, cidrs...)...)
	if got := udpAddrOf(s); got != "[::]:443" { // Go listens on both families for 0.0.0.0, as for TCP
		t.Fatalf("listening on %q", got)
	}
	for _, tc := range []struct{ to, sni, want string }{
		{"192.0.2.1:443", "v4.example.test", "backend=v4"},
		{"192.0.2.2:443", "v4.example.test", "backend=v4"},
		{"192.0.2.1:443", "other.example.test", "backend=other"},
		{"192.0.2.2:443", "v6.example.test", "backend=v6"},
		{"[2001:db8:1::2]:443", "v4.example.test", "backend=v4"},
	} {
		from := "192.0.2.10"
		if strings.HasPrefix(tc.to, "[") {
			from = "2001:db8:1::10"
		}
		res, err := h3Get(t, from, tc.to, tc.sni, 5*time.Second)
		if err != nil {
			t.Fatalf("GET https://%s/ via %s: %v\n%s", tc.sni, tc.to, err, s.Output())
		}
		if !strings.HasPrefix(res.Body, tc.want+" ") {
			t.Errorf("GET https://%s/ via %s: %q, want %s", tc.sni, tc.to, res.Body, tc.want)
		}
		if res.Initials < 2 {
			t.Errorf("GET https://%s/: the hello took %d datagram(s); quic-go's post-quantum hello should take 2", tc.sni, res.Initials)
		}
		t.Logf("%s via %s: %q, hello in %d datagrams", tc.sni, tc.to, res.Body, res.Initials)
	}
	// tcp mode: the backend sees snilisten's address (here the one the
	// kernel picks for the backend's, itself on lo), not the client's.
	res, err := h3Get(t, "192.0.2.10", "192.0.2.1:443", "v4.example.test", 5*time.Second)
	if err != nil || !strings.HasPrefix(res.Body, "backend=v4 remote=198.51.100.10:") {
		t.Errorf("tcp mode: the backend saw %q (%v), want snilisten's address", res.Body, err)
	}
	for _, tc := range []struct{ sni, outcome string }{
		{"evil.example.test", "refused_cidr"},
		{"nothere.example.test", "unknown_name"},
	} {
		if res, err := h3Get(t, "192.0.2.10", "192.0.2.1:443", tc.sni, 2*time.Second); err == nil {
			t.Errorf("GET https://%s/: answered %q, want no answer", tc.sni, res.Body)
		}
		waitLog(t, s.Proc, "msg=\"quic flow\"", "sni="+tc.sni, "outcome="+tc.outcome)
		// The client sent its hello again and again for 2 s: one flow,
		// one lookup, one line.
		if n := len(logLines(s.Proc, "sni="+tc.sni)); n != 1 {
			t.Errorf("%s: %d log lines, want 1 for the retransmitted hello", tc.sni, n)
		}
	}
	// The clients closed their connections (in an encrypted frame):
	// their flows end when idle, one line each with the bytes both ways.
	waitFor(t, 10*time.Second, "the flows to end idle", func() bool {
		return len(logLines(s.Proc, "msg=\"quic flow\"", "outcome=ok")) == 6
	})
	for _, l := range logLines(s.Proc, "msg=\"quic flow\"", "outcome=ok") {
		if !regexp.MustCompile(`client=(192\.0\.2\.10|\[2001:db8:1::10\]):\d+ sni=(v4|v6|other)\.example\.test backend=\S+:8443 up=[1-9]\d* down=[1-9]\d* datagrams_up=[1-9]\d* datagrams_down=[1-9]`).MatchString(l) {
			t.Errorf("flow log line: %s", l)
		}
	}
	t.Logf("snilisten:\n%s", s.Output())

	// A name that leads back to snilisten's own UDP port (the port the
	// client came to is the backend port without -backend-port) is
	// refused, not relayed to itself.
	loop := startSnilistenOn(t, "udp:0.0.0.0:9443", "-mode", "tcp", "-backend-cidr", "192.0.2.0/24")
	if res, err := h3Get(t, "192.0.2.10", "192.0.2.3:9443", "loop.example.test", 2*time.Second); err == nil {
		t.Errorf("loop.example.test answered %q", res.Body)
	}
	waitLog(t, loop.Proc, "msg=\"quic flow\"", "sni=loop.example.test", "outcome=refused_cidr", "this proxy")
	if n := len(logLines(loop.Proc, "msg=\"quic flow\"")); n != 1 {
		t.Errorf("%d flows for one client of loop.example.test, want 1:\n%s", n, loop.Output())
	}
}

// TestQUICNAT46Mode is the flagship: an IPv4 client's HTTP/3 request
// reaches an unmodified HTTP/3 server on IPv6, which sees the client's
// IPv4 address embedded in the NAT46 prefix, and its port, exactly as
// over TCP. A client over IPv6 is refused (it should reach the backend
// directly).
func TestQUICNAT46Mode(t *testing.T) {
	if !inNetns(t) {
		return
	}
	netnsSetup(t,
		[]string{"192.0.2.1/32", "192.0.2.10/32", "2001:db8:5ba7::10/128"},
		"127.0.0.1 localhost\n2001:db8:5ba7::10 app.example.test\n",
		"nameserver 127.0.0.53\n")
	h3Backend(t, "[2001:db8:5ba7::10]:443", "app")
	s := startSnilistenOn(t, "udp:192.0.2.1:443", "-mode", "nat46", "-nat46-prefix", "64:ff9b:1::/96",
		"-backend-cidr", "2001:db8:5ba7::/64", "-listen", "udp:[::1]:443", "-quic-idle-timeout", "2s")
	res, err := h3Get(t, "192.0.2.10", "192.0.2.1:443", "app.example.test", 5*time.Second)
	if err != nil {
		t.Fatalf("GET https://app.example.test/: %v\n%s", err, s.Output())
	}
	_, clientPort, _ := net.SplitHostPort(res.Local)
	want := "backend=app remote=[64:ff9b:1::c000:20a]:" + clientPort
	if res.Body != want {
		t.Errorf("the backend saw %q, want %q", res.Body, want)
	}
	t.Logf("client %s, hello in %d datagrams: %q", res.Local, res.Initials, res.Body)
	waitLog(t, s.Proc, "msg=\"quic flow\"", "client=192.0.2.10:"+clientPort, "backend=[2001:db8:5ba7::10]:443", "outcome=ok")

	if _, err := h3Get(t, "::1", "[::1]:443", "app.example.test", 2*time.Second); err == nil {
		t.Errorf("a client over IPv6 was served in nat46 mode")
	}
	waitLog(t, s.Proc, "msg=\"quic flow\"", "client=[::1]:", "came over IPv6")
}

// TestQUICHostile sends snilisten's UDP port what an attacker or a broken
// network would: garbage, short header packets, unknown versions, and a
// flood of real Initials (replayed captures) from 300 ports of one
// address. All are dropped (counted by reason) without harming a real
// client from another address, and the flood starts no more flows than
// its prefix's burst.
func TestQUICHostile(t *testing.T) {
	if !inNetns(t) {
		return
	}
	netnsSetup(t,
		[]string{"192.0.2.1/32", "192.0.2.10/32", "192.0.2.66/32", "198.51.100.10/32"},
		"127.0.0.1 localhost\n198.51.100.10 app.example.test quic-v1.example.test quic-v2.example.test classic.example.test\n",
		"nameserver 127.0.0.53\n")
	h3Backend(t, "198.51.100.10:443", "app")
	const burst = 5
	s := startSnilistenOn(t, "udp:192.0.2.1:443", "-mode", "tcp", "-backend-cidr", "198.51.100.0/24",
		"-quic-flow-rate", "1", "-quic-flow-burst", fmt.Sprint(burst), "-metrics-listen", "127.0.0.1:0", "-q")
	metrics := metricsAddr(t, s.Proc)

	attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("192.0.2.66")})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.1:443"))
	send := func(c *net.UDPConn, d []byte) {
		if _, err := c.WriteToUDP(d, to); err != nil {
			t.Fatal(err)
		}
	}
	// Sent 100 at a time, each batch once the last is counted, so that
	// none is lost in the socket's buffer (whose size net.core.rmem_max
	// caps) and every one must be accounted for.
	dropped := func(reason string) float64 {
		return metricValue(t, metrics, "snilisten_quic_datagrams_dropped_total", `reason="`+reason+`"`)
	}
	seen := func() float64 { // at least one per hello: a flow started or a datagram dropped for the rate
		return dropped("rate") + metricValue(t, metrics, "snilisten_quic_flows_started_total", "")
	}
	paced := func(what string, n int, count func() float64, sendOne func(i int)) {
		for i := 0; i < n; i++ {
			if i%100 == 0 && i > 0 {
				waitFor(t, 10*time.Second, fmt.Sprintf("%d %s counted", i, what), func() bool { return count() >= float64(i) })
			}
			sendOne(i)
		}
	}
	garbage := make([]byte, 1200)
	paced("short headers", 500, func() float64 { return dropped("not_quic") }, func(int) {
		rand.Read(garbage)
		garbage[0] = 0x40 | garbage[0]&0x3f // a short header: no flow to start
		send(attacker, garbage)
	})
	unknown := make([]byte, 1200)
	paced("unknown versions", 500, func() float64 { return dropped("unknown_version") }, func(int) {
		rand.Read(unknown)
		unknown[0] = 0xc0
		binary.BigEndian.PutUint32(unknown[1:], 0x1a2a3a4a) // a reserved (greasing) version
		send(attacker, unknown)
	})
	// The flood: each port sends a real client's whole hello.
	caps := quictest.Captures(t)
	paced("hellos", 300, seen, func(i int) {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("192.0.2.66")})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range caps[i%len(caps)].Datagrams {
			send(c, d)
		}
		c.Close()
	})
	// A real client from another address is served all along.
	res, err := h3Get(t, "192.0.2.10", "192.0.2.1:443", "app.example.test", 5*time.Second)
	if err != nil || !strings.HasPrefix(res.Body, "backend=app ") {
		t.Fatalf("a real client during the flood: %v %q", err, res.Body)
	}
	waitFor(t, 5*time.Second, "every datagram to be counted", func() bool {
		return metricValue(t, metrics, "snilisten_quic_datagrams_dropped_total", `reason="unknown_version"`) >= 500
	})
	notQUIC := metricValue(t, metrics, "snilisten_quic_datagrams_dropped_total", `reason="not_quic"`)
	unknownVersion := metricValue(t, metrics, "snilisten_quic_datagrams_dropped_total", `reason="unknown_version"`)
	rate := metricValue(t, metrics, "snilisten_quic_datagrams_dropped_total", `reason="rate"`)
	started := metricValue(t, metrics, "snilisten_quic_flows_started_total", "")
	t.Logf("dropped: not_quic %v, unknown_version %v, rate %v; flows started %v", notQUIC, unknownVersion, rate, started)
	if notQUIC != 500 || unknownVersion != 500 {
		t.Errorf("dropped not_quic %v and unknown_version %v, want 500 each", notQUIC, unknownVersion)
	}
	// The flood's 300 hellos: at most the burst and what the rate of 1/s
	// refilled meanwhile start a flow; the others' first datagrams are
	// dropped for the rate.
	if started > burst+10 || started < 2 {
		t.Errorf("%v flows started (the flood's and the real client's), want at most the burst %d plus refills", started, burst)
	}
	if rate < 250 {
		t.Errorf("%v datagrams dropped for the rate, want most of the flood's 300 hellos", rate)
	}
	if s.Exited() {
		t.Fatalf("snilisten exited: %s", s.Output())
	}
}

// TestQUICSocketActivation serves a UDP socket inherited from systemd
// (ListenDatagram=, here systemd-socket-activate --datagram, which starts
// snilisten at the first datagram: that hello must be served), and on
// SIGTERM ends the open QUIC flows at once (they cannot outlive the
// socket) and exits 0 well before -shutdown-timeout. In unix mode the
// inherited UDP socket is refused with a warning, and with nothing else
// to serve snilisten fails.
func TestQUICSocketActivation(t *testing.T) {
	need(t, "systemd-socket-activate")
	backendPort := freeUDPPort(t)
	h3Backend(t, fmt.Sprintf("127.0.0.1:%d", backendPort), "local")
	notify := newNotifySocket(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	p := start(t, exec.Command("systemd-socket-activate", "--datagram", "-l", addr, "--fdname=https",
		"-E", "NOTIFY_SOCKET="+notify.Path,
		bin(t, "snilisten"), "-listen", "fd:https", "-mode", "tcp", "-backend-cidr", "127.0.0.0/8",
		"-backend-port", fmt.Sprint(backendPort), "-shutdown-timeout", "60s"))
	waitUDPBound(t, addr) // systemd-socket-activate binds, then waits for a datagram
	res, err := h3Get(t, "", addr, "localhost", 10*time.Second)
	if err != nil || !strings.HasPrefix(res.Body, "backend=local ") {
		t.Fatalf("through the inherited socket: %v %q\n%s", err, res.Body, p.Output())
	}
	waitFor(t, 10*time.Second, "READY=1", func() bool { return notify.saw("READY=1") })
	started := time.Now()
	p.Signal(t, syscall.SIGTERM)
	if err := p.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("snilisten exit after SIGTERM: %v (want status 0)\n%s", err, p.Output())
	}
	t.Logf("exited %v after SIGTERM with a QUIC flow open", time.Since(started).Round(time.Millisecond))
	if len(logLines(p, "msg=\"quic flow\"", "sni=localhost", "outcome=shutdown")) != 1 {
		t.Errorf("want one flow ended by the shutdown:\n%s", p.Output())
	}

	// unix mode: the datagram socket is not served.
	addr = fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	p = start(t, exec.Command("systemd-socket-activate", "--datagram", "-l", addr,
		bin(t, "snilisten"), "-mode", "unix", "-unix-directory", socketDir(t)))
	waitUDPBound(t, addr)
	uc, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	uc.Write([]byte("start"))
	uc.Close()
	if err := p.Wait(t, 10*time.Second); err == nil || !strings.Contains(p.Output(), "not serving QUIC") || !strings.Contains(p.Output(), "nothing to listen on") {
		t.Errorf("unix mode with only a UDP socket: %v\n%s", err, p.Output())
	}
}

// waitUDPBound waits until a UDP socket is bound to addr (so that a
// datagram sent there is queued, not refused), without sending anything.
func waitUDPBound(t testing.TB, addr string) {
	t.Helper()
	ua := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr))
	waitFor(t, 10*time.Second, "a UDP socket on "+addr, func() bool {
		pc, err := net.ListenUDP("udp", ua)
		if err == nil {
			pc.Close()
		}
		return errors.Is(err, syscall.EADDRINUSE)
	})
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// TestQUICBackendDies: a backend killed mid-connection (its socket
// closes without a word) ends the flow with backend_error when the
// client's next datagram meets the closed port (ICMP port unreachable);
// once the backend is back, a new connection is served; and when the
// flows are over snilisten holds no more sockets than before them.
func TestQUICBackendDies(t *testing.T) {
	backendAddr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	kill := h3Backend(t, backendAddr, "first")
	_, backendPort, _ := net.SplitHostPort(backendAddr)
	s := startSnilistenOn(t, "udp:127.0.0.1:0", "-mode", "tcp", "-backend-cidr", "127.0.0.0/8",
		"-backend-port", backendPort, "-quic-idle-timeout", "1s")
	before := socketCount(t, s.Pid())

	c, err := newH3Client(t, "", udpAddrOf(s), "localhost", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if body, err := c.Get(5 * time.Second); err != nil || !strings.HasPrefix(body, "backend=first ") {
		t.Fatalf("first request: %v %q", err, body)
	}
	kill()
	if body, err := c.Get(3 * time.Second); err == nil {
		t.Fatalf("a request to the killed backend was answered: %q", body)
	}
	waitLog(t, s.Proc, "msg=\"quic flow\"", "sni=localhost", "outcome=backend_error", "connection refused")

	h3Backend(t, backendAddr, "second")
	res, err := h3Get(t, "", udpAddrOf(s), "localhost", 5*time.Second)
	if err != nil || !strings.HasPrefix(res.Body, "backend=second ") {
		t.Fatalf("after the backend came back: %v %q", err, res.Body)
	}
	waitFor(t, 10*time.Second, "the flows to end", func() bool {
		return len(logLines(s.Proc, "msg=\"quic flow\"")) == 2
	})
	if after := socketCount(t, s.Pid()); after != before {
		t.Errorf("snilisten holds %d sockets after its flows ended, %d before them", after, before)
	}
}

// TestQUICLoopDNAT: a name whose address a DNAT rule sends back to
// snilisten's own UDP port, past the allow list's route check, makes one
// round and is refused as a loop, instead of a chain of flows each
// holding a slot.
func TestQUICLoopDNAT(t *testing.T) {
	need(t, "nft")
	if !inNetns(t) {
		return
	}
	netnsSetup(t, []string{"192.0.2.1/32", "192.0.2.10/32"},
		"127.0.0.1 localhost\n203.0.113.5 bent.example.test\n", "nameserver 127.0.0.53\n")
	ipCmd(t, "route", "add", "203.0.113.0/24", "dev", "lo", "src", "192.0.2.1")
	for _, args := range [][]string{
		{"add", "table", "ip", "loop"},
		{"add", "chain", "ip", "loop", "out", "{ type nat hook output priority -100; }"},
		{"add", "rule", "ip", "loop", "out", "ip", "daddr", "203.0.113.0/24", "udp", "dport", "443", "dnat", "to", "192.0.2.1"},
	} {
		if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	s := startSnilistenOn(t, "udp:192.0.2.1:443", "-mode", "tcp", "-backend-cidr", "203.0.113.0/24")
	if res, err := h3Get(t, "192.0.2.10", "192.0.2.1:443", "bent.example.test", 2*time.Second); err == nil {
		t.Errorf("bent.example.test answered %q", res.Body)
	}
	waitLog(t, s.Proc, "msg=\"quic flow\"", "client=192.0.2.1:", "outcome=loop")
	time.Sleep(500 * time.Millisecond) // a chain would go on meanwhile
	if n := len(logLines(s.Proc, "msg=\"quic flow\"", "sni=bent.example.test")); n != 1 {
		t.Errorf("%d flows besides the client's own, want 1 (the loop refused at its second round):\n%s", n, s.Output())
	}
}

// TestQUICSlowDNS: hellos for names whose DNS answer is slow (an
// attacker's name server can make it so) must not keep other clients'
// hellos out. With -quic-max-pending 4, eight clients ask for names
// whose answers the test holds back; a client asking for a name that
// resolves at once is served meanwhile, and the eight are routed when
// the answers come.
func TestQUICSlowDNS(t *testing.T) {
	if !inNetns(t) {
		return
	}
	netnsSetup(t, []string{"192.0.2.1/32", "192.0.2.10/32", "192.0.2.11/32", "198.51.100.10/32"},
		"127.0.0.1 localhost\n198.51.100.10 app.example.test\n", "nameserver 127.0.0.53\noptions timeout:30 attempts:1\n")
	release := make(chan struct{})
	dnsServer(t, func(q dns.Question) []dns.RR {
		if strings.HasPrefix(q.Name, "slow") {
			<-release
			if q.Qtype == dns.TypeA {
				return []dns.RR{rr(t, q.Name+" 60 IN A 198.51.100.10")}
			}
		}
		return nil
	})
	h3Backend(t, "198.51.100.10:8443", "app")
	s := startSnilistenOn(t, "udp:192.0.2.1:443", "-mode", "tcp", "-backend-cidr", "198.51.100.0/24", "-backend-port", "8443",
		"-quic-max-pending", "4", "-connect-timeout", "30s", "-metrics-listen", "127.0.0.1:0")
	metrics := metricsAddr(t, s.Proc)
	slow := make(chan error, 8)
	for i := range 8 {
		go func() {
			res, err := h3Get(t, "192.0.2.11", "192.0.2.1:443", fmt.Sprintf("slow%d.example.test", i), 20*time.Second)
			if err == nil && !strings.HasPrefix(res.Body, "backend=app ") {
				err = fmt.Errorf("answered %q", res.Body)
			}
			slow <- err
		}()
	}
	waitFor(t, 10*time.Second, "eight flows waiting for their lookups", func() bool {
		return metricValue(t, metrics, "snilisten_quic_flows_pending", "") == 8
	})
	res, err := h3Get(t, "192.0.2.10", "192.0.2.1:443", "app.example.test", 5*time.Second)
	close(release)
	if err != nil || !strings.HasPrefix(res.Body, "backend=app ") {
		t.Errorf("a client while 8 lookups wait: %v %q", err, res.Body)
	}
	for range 8 {
		if err := <-slow; err != nil {
			t.Errorf("a slow name, once answered: %v", err)
		}
	}
}

// TestQUICMemoryPerFlow routes 2000 flows at once (real clients' hellos
// replayed from 2000 ports to a quic-go backend, which answers each) and
// reads what they cost snilisten: resident memory per flow (one
// goroutine and one socket each), bounded well above what it measures,
// and that everything is given back once they end.
func TestQUICMemoryPerFlow(t *testing.T) {
	if !inNetns(t) {
		return
	}
	netnsSetup(t, []string{"192.0.2.1/32", "198.51.100.10/32"},
		"127.0.0.1 localhost\n198.51.100.10 quic-v1.example.test quic-v2.example.test classic.example.test\n", "nameserver 127.0.0.53\n")
	h3Backend(t, "198.51.100.10:8443", "app")
	s := startSnilistenOn(t, "udp:192.0.2.1:443", "-mode", "tcp", "-backend-cidr", "198.51.100.0/24", "-backend-port", "8443",
		"-quic-flow-rate", "0", "-quic-max-flows-per-client", "0", "-quic-idle-timeout", "3s", "-q", "-metrics-listen", "127.0.0.1:0")
	metrics := metricsAddr(t, s.Proc)
	base := takeBaseline(t, s, metrics)
	before := rssKiB(t, s.Pid())
	const flows = 2000
	caps := quictest.Captures(t)
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.1:443"))
	for i := range flows {
		c, err := net.DialUDP("udp", nil, to)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range caps[i%len(caps)].Datagrams {
			c.Write(d)
		}
		defer c.Close()
		if i%100 == 99 { // within the socket's buffer
			waitFor(t, 10*time.Second, "the hellos to be read", func() bool {
				return metricValue(t, metrics, "snilisten_quic_flows_started_total", "") > float64(i-100)
			})
		}
	}
	waitFor(t, 20*time.Second, "every flow routed", func() bool {
		return metricValue(t, metrics, "snilisten_quic_flows_active", "") == flows
	})
	perFlow := float64(rssKiB(t, s.Pid())-before) / flows
	t.Logf("%d flows: %.1f KiB of resident memory each, %d descriptors", flows, perFlow, fdCount(t, s.Pid()))
	if perFlow > 48 {
		t.Errorf("%.1f KiB per routed flow, want at most 48", perFlow)
	}
	waitFor(t, 20*time.Second, "every flow to end", func() bool {
		return metricValue(t, metrics, "snilisten_quic_flows_active", "") == 0
	})
	t.Log(checkBaseline(t, s, metrics, base))
}
