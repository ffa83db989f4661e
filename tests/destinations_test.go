package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Destinations in the tcp modes (issue 21, part 3): where a name may lead
// snilisten and redirect80 -acme tcp, beyond -backend-cidr.

// ipCmd runs ip(8) with args inside the test's namespace.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// loopRoutes makes the two kinds of loop a name can lead to inside the
// namespace, which must have 192.0.2.1 on lo: 10.7.0.0/24 is routed
// locally (AnyIP), which the route check sees; 203.0.113.0/24 is routed
// out of lo as if to another machine, but a DNAT rule sends connections
// to its port port to 192.0.2.1, here: a route query (the route check)
// does not see netfilter, only the accept-time check can.
func loopRoutes(t *testing.T, port int) {
	t.Helper()
	ipCmd(t, "route", "add", "local", "10.7.0.0/24", "dev", "lo")
	ipCmd(t, "route", "add", "203.0.113.0/24", "dev", "lo", "src", "192.0.2.1")
	for _, args := range [][]string{
		{"add", "table", "ip", "loop"},
		{"add", "chain", "ip", "loop", "out", "{ type nat hook output priority -100; }"},
		{"add", "rule", "ip", "loop", "out", "ip", "daddr", "203.0.113.0/24", "tcp", "dport", fmt.Sprint(port), "dnat", "to", "192.0.2.1"},
	} {
		if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDestinationsSRVPorts: an SRV answer may lead only to the ports
// -srv-ports lists (5223 and 5269 by default), and an answer with many
// targets or addresses gets at most backend.MaxTargets (8) tried.
func TestDestinationsSRVPorts(t *testing.T) {
	if !inNetns(t) {
		return
	}
	hosts := "127.0.0.1 localhost\n198.51.100.12 redis.example.test\n"
	for i := range 20 {
		hosts += fmt.Sprintf("198.51.100.%d t%d.example.test\n198.51.100.%d wide.example.test\n", 100+i, i, 100+i)
	}
	netnsSetup(t, []string{"192.0.2.1/32", "192.0.2.2/32", "198.51.100.12/32"}, hosts, "nameserver 127.0.0.53\noptions timeout:2 attempts:1\n")
	// Nothing listens on 198.51.100.100-119: each connect is refused at once.
	ipCmd(t, "route", "add", "local", "198.51.100.96/27", "dev", "lo")
	dnsServer(t, func(q dns.Question) []dns.RR {
		switch {
		case q.Name == "_xmpps-client._tcp.redis.example.test." && q.Qtype == dns.TypeSRV:
			return []dns.RR{rr(t, "_xmpps-client._tcp.redis.example.test. 60 IN SRV 0 0 6379 redis.example.test.")}
		case q.Name == "_xmpps-client._tcp.many.example.test." && q.Qtype == dns.TypeSRV:
			var out []dns.RR
			for i := range 12 {
				out = append(out, rr(t, fmt.Sprintf("_xmpps-client._tcp.many.example.test. 60 IN SRV %d 0 5223 t%d.example.test.", i, i)))
			}
			return out
		}
		return nil
	})
	redis := watchListener(t, "198.51.100.12:6379")
	cidr := []string{"-mode", "tcp", "-backend-cidr", "198.51.100.0/24"}
	s := startSnilistenOn(t, "tcp:192.0.2.1:443", cidr...)

	// A one-ALPN client reaching a Redis-like port through SRV.
	_, err := getFrom(t, "", s.Addr, "redis.example.test", "xmpp-client")
	time.Sleep(100 * time.Millisecond)
	t.Logf("SRV to port 6379 with the default -srv-ports: client got %v; the port was reached %d times", err, *redis)
	if *redis != 0 || err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Errorf("SRV target on port 6379: reached %d times, client got %v; want never reached, unrecognized_name", *redis, err)
	}
	waitLog(t, s.Proc, "sni=redis.example.test", "outcome=refused_cidr", "port 6379 is not in -srv-ports")

	// At most 8 of 12 SRV targets (as many as a UDP answer holds here),
	// and of 20 addresses, are tried.
	for _, name := range []string{"many.example.test", "wide.example.test"} {
		var alpn []string
		if name == "many.example.test" {
			alpn = []string{"xmpp-client"}
		}
		if _, err := getFrom(t, "", s.Addr, name, alpn...); err == nil || !strings.Contains(err.Error(), "internal error") {
			t.Errorf("%s: %v, want internal_error (every backend refused)", name, err)
		}
		waitLog(t, s.Proc, "sni="+name, "outcome=backend_error")
		line := logLines(s.Proc, "sni="+name)[0]
		tried := strings.Count(line, "connection refused")
		t.Logf("%s: %d addresses tried (12 SRV targets, 20 A records)", name, tried)
		if tried != 8 {
			t.Errorf("%s: %d addresses tried, want 8 (backend.MaxTargets):\n%s", name, tried, line)
		}
	}

	// The operator may list the port.
	s2 := startSnilistenOn(t, "tcp:192.0.2.2:443", append(cidr, "-srv-ports", "5223,6379")...)
	getFrom(t, "", s2.Addr, "redis.example.test", "xmpp-client")
	waitLog(t, s2.Proc, "sni=redis.example.test", "backend=198.51.100.12:6379")
	if *redis != 1 {
		t.Errorf("with -srv-ports 5223,6379 the port was reached %d times, want 1", *redis)
	}
}

// tryGet makes one GET request for path on host through addr, waiting at
// most wait for the answer, and returns its status (0 if none came).
func tryGet(addr, host, path string, wait time.Duration) int {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
	resp, _, err := readResponse(bufio.NewReader(c), "GET")
	if err != nil {
		return 0
	}
	return resp.StatusCode
}

// slotsHeld polls snilisten's active connections until they are back to
// zero or 10 seconds passed, and returns the last value.
func slotsHeld(t *testing.T, metrics string) float64 {
	t.Helper()
	var v float64
	for range 100 {
		if v = metricValue(t, metrics, "snilisten_connections_active", ""); v == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return v
}

// TestDestinationsSnilistenLoop: with snilisten on the wildcard address,
// a name in a locally routed range (AnyIP) made it connect to itself,
// round after round, until every slot was held by the one client and
// nobody else was served. The route check refuses such a name; a loop
// the route check cannot see (a rule on the destination port) is cut at
// the second round, where the connection comes from one of snilisten's
// own.
func TestDestinationsSnilistenLoop(t *testing.T) {
	need(t, "nft")
	if !inNetns(t) {
		return
	}
	netnsSetup(t, []string{"192.0.2.1/32", "198.51.100.10/32"},
		"127.0.0.1 localhost\n10.7.0.5 loop.example.test\n203.0.113.5 bent.example.test\n198.51.100.10 ok.example.test\n",
		"nameserver 127.0.0.53\noptions timeout:2 attempts:1\n")
	loopRoutes(t, 443)
	// The other clients come in on port 8443, and their backend is on
	// 8443: snilisten's wildcard takes every local address on 443.
	tcpBackend(t, "198.51.100.10:8443", "ok", false)
	s := startSnilistenOn(t, "tcp:0.0.0.0:443", "-listen", "tcp:127.0.0.1:8443", "-mode", "tcp",
		"-backend-cidr", "10.0.0.0/8", "-backend-cidr", "203.0.113.0/24", "-backend-cidr", "198.51.100.0/24",
		"-max-conns", "16", "-metrics-listen", "127.0.0.1:9100")
	metrics := metricsAddr(t, s.Proc)
	const addr, other = "127.0.0.1:443", "127.0.0.1:8443"

	// The looping client stays connected while the others are tried.
	// (Each listener's accept loop takes its slot before it accepts: with
	// two listeners a loop can hold 15 of the 16 slots, the last being
	// the other listener's.)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(rawHello("loop.example.test"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, _ := io.ReadAll(c)
	held := slotsHeld(t, metrics)
	_, otherErr := getFrom(t, "", other, "ok.example.test")
	t.Logf("AnyIP name: client got %x; %v of 16 slots held; another client got error %v", reply, held, otherErr)
	// An alert record: 21, version, length 2, level 2, unrecognized_name (112).
	if len(reply) != 7 || reply[0] != 21 || reply[6] != 112 || held != 0 || otherErr != nil {
		t.Errorf("loop.example.test (10.7.0.5, routed locally): client got %x, %v of 16 slots held, another client got %v; want an unrecognized_name alert, 0, served", reply, held, otherErr)
	}
	c.Close()
	waitLog(t, s.Proc, "sni=loop.example.test", "outcome=refused_cidr", "routed to this machine")

	// Past the route check: one round, then refused as a loop.
	_, err = getFrom(t, "", addr, "bent.example.test")
	held = slotsHeld(t, metrics)
	t.Logf("name looping past the route check: client got %v; %v of 16 slots held", err, held)
	if err == nil || !strings.Contains(err.Error(), "internal error") || held != 0 {
		t.Errorf("bent.example.test (203.0.113.5, sent here by DNAT): client got %v, %v of 16 slots held; want internal_error, 0", err, held)
	}
	waitLog(t, s.Proc, "client=192.0.2.1:", "sni=bent.example.test", "outcome=loop")
	if n := len(logLines(s.Proc, "sni=bent.example.test")); n != 2 {
		t.Errorf("bent.example.test: %d connections logged, want 2 (the client's, and its one round back here)", n)
	}
	body, err := getFrom(t, "", other, "ok.example.test")
	if err != nil || !strings.Contains(body, "backend=ok") {
		t.Fatalf("another client after the loop: %v %q", err, body)
	}
}

// TestDestinationsACMELoop: redirect80 -acme tcp on the wildcard address
// forwarded a challenge for a name in a locally routed range to itself,
// round after round, each round a slot; now it answers 502 at once, and
// a loop the route check cannot see is answered 502 at its second round.
func TestDestinationsACMELoop(t *testing.T) {
	need(t, "nft")
	if !inNetns(t) {
		return
	}
	netnsSetup(t, []string{"192.0.2.1/32"}, "127.0.0.1 localhost\n10.7.0.5 loop.example.test\n203.0.113.5 bent.example.test\n",
		"nameserver 127.0.0.53\noptions timeout:2 attempts:1\n")
	loopRoutes(t, 80)
	r := startRedirect80(t, "-listen", "tcp:0.0.0.0:80", "-acme", "tcp", "-backend-cidr", "10.0.0.0/8", "-backend-cidr", "203.0.113.0/24", "-max-conns", "16", "-acme-timeout", "30s")
	const addr = "127.0.0.1:80"
	challenge := "/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

	// The looping request is answered, or waits, while another client
	// is tried.
	looped := make(chan int, 1)
	go func() { looped <- tryGet(addr, "loop.example.test", challenge, 60*time.Second) }()
	otherStatus := tryGet(addr, "ok.example.test", "/x", 10*time.Second)
	status := <-looped
	waitLog(t, r.Proc, "client=127.0.0.1:", "host=loop.example.test")
	rounds := len(logLines(r.Proc, "client=10.7.0.5:"))
	t.Logf("AnyIP name: %d; %d rounds back to redirect80 logged by then; another client got %d meanwhile", status, rounds, otherStatus)
	if status != 502 || rounds != 0 || otherStatus != 301 {
		t.Errorf("challenge for loop.example.test (10.7.0.5, routed locally): %d after %d rounds back here, another client got %d; want 502 after none, 301", status, rounds, otherStatus)
	}
	waitLog(t, r.Proc, "host=loop.example.test", "status=502", "routed to this machine")

	status = tryGet(addr, "bent.example.test", challenge, 60*time.Second)
	waitLog(t, r.Proc, "client=127.0.0.1:", "host=bent.example.test")
	rounds = len(logLines(r.Proc, "client=192.0.2.1:"))
	t.Logf("name looping past the route check: %d; %d rounds back to redirect80", status, rounds)
	if status != 502 || rounds != 1 {
		t.Errorf("challenge for bent.example.test (203.0.113.5, sent here by DNAT): %d after %d rounds back here; want 502 after 1", status, rounds)
	}
	waitLog(t, r.Proc, "client=192.0.2.1:", "host=bent.example.test", "status=502", "leads back here")
}
