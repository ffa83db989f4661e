package tests

import (
	"fmt"
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
