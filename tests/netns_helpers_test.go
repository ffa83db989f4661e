package tests

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// inNetns runs the calling test again in fresh network and mount
// namespaces (unshare, as root), where it may bind any test address and
// replace /etc/hosts and /etc/resolv.conf without touching the machine.
// It returns true in the inner run, which should go on with the test, and
// false in the outer one, which has already reported the inner result.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv("SNITOOLS_IN_NETNS") == t.Name() {
		return true
	}
	need(t, "unshare", "ip", "mount")
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (unshare --net --mount)")
	}
	if err := exec.Command("unshare", "--net", "--mount", "true").Run(); err != nil {
		t.Skipf("cannot create namespaces here (unshare --net --mount): %v", err)
	}
	cmd := exec.Command("unshare", "--net", "--mount", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "SNITOOLS_IN_NETNS="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("inside a network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("test failed inside the namespace: %v", err)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Skip("skipped inside the namespace")
	}
	return false
}

// netnsSetup brings loopback up inside the namespace, adds each address
// (CIDR notation) to it, routes the NAT46 prefix locally, and bind-mounts
// private /etc/hosts and /etc/resolv.conf with the given contents.
func netnsSetup(t *testing.T, addrs []string, hosts, resolvConf string) {
	t.Helper()
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "link", "set", "lo", "up")
	for _, a := range addrs {
		if strings.Contains(a, ":") {
			run("ip", "-6", "addr", "add", a, "dev", "lo", "nodad")
		} else {
			run("ip", "addr", "add", a, "dev", "lo")
		}
	}
	run("ip", "-6", "route", "add", "local", "64:ff9b:1::/96", "dev", "lo")
	dir := t.TempDir()
	for target, content := range map[string]string{"/etc/hosts": hosts, "/etc/resolv.conf": resolvConf} {
		f := filepath.Join(dir, filepath.Base(target))
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		run("mount", "--bind", f, target)
	}
}

// watchListener listens on addr and counts connections to it: a test
// asserts that forbidden addresses are never dialled.
func watchListener(t *testing.T, addr string) *int64 {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var hits int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits++
			c.Close()
		}
	}()
	return &hits
}

// dnsServer answers on 127.0.0.53:53 (inside a namespace) from answer,
// which is called for each question.
func dnsServer(t *testing.T, answer func(q dns.Question) []dns.RR) {
	t.Helper()
	srv := &dns.Server{Addr: "127.0.0.53:53", Net: "udp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			m.Answer = append(m.Answer, answer(q)...)
		}
		if len(m.Answer) == 0 {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	ready := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(ready) }
	go srv.ListenAndServe()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("DNS server did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
}

func rr(t *testing.T, s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
