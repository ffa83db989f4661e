package tests

import (
	"regexp"
	"strings"

	"github.com/miekg/dns"
	"testing"
	"time"
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
		[]string{"192.0.2.1/32", "192.0.2.2/32", "192.0.2.10/32", "198.51.100.10/32", "198.51.100.11/32", "203.0.113.5/32", "2001:db8:5ba7::10/128"},
		"127.0.0.1 localhost\n"+
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
	} {
		res, err := h3Get(t, "192.0.2.10", tc.to, tc.sni, 5*time.Second)
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
	// tcp mode: the backend sees snilisten's address.
	res, _ := h3Get(t, "192.0.2.10", "192.0.2.1:443", "v4.example.test", 5*time.Second)
	if !strings.Contains(res.Body, "remote=198.51.100.10:") && !strings.Contains(res.Body, "remote=192.0.2.1:") {
		t.Logf("tcp mode remote: %q", res.Body)
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
		return len(logLines(s.Proc, "msg=\"quic flow\"", "outcome=ok")) == 5
	})
	for _, l := range logLines(s.Proc, "msg=\"quic flow\"", "outcome=ok") {
		if !regexp.MustCompile(`client=192\.0\.2\.10:\d+ sni=(v4|v6|other)\.example\.test backend=\S+:8443 up=[1-9]\d* down=[1-9]\d* datagrams_up=[1-9]\d* datagrams_down=[1-9]`).MatchString(l) {
			t.Errorf("flow log line: %s", l)
		}
	}
	t.Logf("snilisten:\n%s", s.Output())
}
