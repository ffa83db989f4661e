package backend

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// inNetns runs the calling test again in a fresh network namespace
// (unshare -n, as root), where it may add routes. It returns true in the
// inner run, false in the outer one, which has reported the inner result.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv("SNITOOLS_BACKEND_NETNS") == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (unshare -n)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8)")
	}
	if err := exec.Command("unshare", "-n", "true").Run(); err != nil {
		t.Skipf("cannot create a network namespace here (unshare -n): %v", err)
	}
	cmd := exec.Command("unshare", "-n", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "SNITOOLS_BACKEND_NETNS="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("inside a network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("test failed inside the namespace (unshare -n): %v", err)
	}
	return false
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestLocalRoutes: the kernel's answer, not a list of addresses, decides:
// a range routed locally (AnyIP) is local though no address in it is
// configured; an address with no route is not.
func TestLocalRoutes(t *testing.T) {
	if !inNetns(t) {
		return
	}
	ip(t, "link", "set", "lo", "up")
	ip(t, "addr", "add", "192.0.2.1/32", "dev", "lo")
	ip(t, "route", "add", "local", "10.7.0.0/24", "dev", "lo")
	ip(t, "-6", "route", "add", "local", "2001:db8:7::/64", "dev", "lo")
	ip(t, "addr", "add", "198.51.100.1/32", "dev", "lo")
	ip(t, "route", "add", "198.51.100.0/24", "dev", "lo") // unicast, as if out of an interface
	var l localRoutes
	for _, tc := range []struct {
		addr  string
		local bool
	}{
		{"127.0.0.1", true},
		{"127.1.2.3", true},
		{"::1", true},
		{"192.0.2.1", true},
		{"::ffff:192.0.2.1", true},
		{"10.7.0.5", true},
		{"10.7.0.255", true},
		{"2001:db8:7::5", true},
		{"198.51.100.1", true},
		{"198.51.100.99", false}, // routed, but not local
		{"10.7.1.5", false},      // no route at all
		{"2001:db8:8::5", false},
		{"203.0.113.5", false},
	} {
		local, err := l.isLocal(netip.MustParseAddr(tc.addr))
		if err != nil || local != tc.local {
			t.Errorf("isLocal(%s) = %v, %v; want %v", tc.addr, local, err, tc.local)
		}
	}
	// Routes are asked for every time, never cached.
	ip(t, "route", "del", "local", "10.7.0.0/24", "dev", "lo")
	if local, err := l.isLocal(netip.MustParseAddr("10.7.0.5")); err != nil || local {
		t.Errorf("isLocal(10.7.0.5) after the route was removed = %v, %v; want false", local, err)
	}
	ip(t, "route", "add", "local", "10.7.0.0/24", "dev", "lo")

	a, err := ParseAllowList([]string{"10.0.0.0/8", "198.51.100.0/24", "127.0.0.0/8", "::1/128"})
	if err != nil {
		t.Fatal(err)
	}
	a.Deny(netip.MustParseAddrPort("0.0.0.0:443"))
	a.Deny(netip.MustParseAddrPort("198.51.100.1:8443"))
	for _, tc := range []struct {
		to      string
		refused bool
	}{
		{"10.7.0.5:443", true},   // AnyIP, on the wildcard listener's port
		{"127.0.0.1:443", true},  // loopback, on it
		{"10.7.0.5:8080", false}, // on another port: a local backend
		{"127.0.0.1:8080", false},
		{"10.7.1.5:443", false},      // not routed here
		{"198.51.100.99:443", false}, // routed elsewhere
		{"198.51.100.1:8443", true},  // an exact listener
		{"203.0.113.5:8080", true},   // outside every CIDR
		{"[::1]:443", false},         // 0.0.0.0 does not take IPv6
	} {
		err := a.Check(netip.MustParseAddrPort(tc.to))
		if refused := err != nil; refused != tc.refused || refused && !errors.Is(err, ErrNotAllowed) {
			t.Errorf("Check(%s) = %v, want refused %v", tc.to, err, tc.refused)
		}
	}
	// [::] takes both families.
	a6, _ := ParseAllowList([]string{"10.0.0.0/8", "::1/128"})
	a6.Deny(netip.MustParseAddrPort("[::]:443"))
	for _, to := range []string{"10.7.0.5:443", "[::1]:443", "[::ffff:10.7.0.5]:443"} {
		if err := a6.Check(netip.MustParseAddrPort(to)); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("Check(%s) under [::]:443 = %v, want refused", to, err)
		}
	}

	// No allocation per query: the socket and buffers are kept.
	to := netip.MustParseAddr("10.7.0.5")
	if n := testing.AllocsPerRun(100, func() { l.isLocal(to) }); n != 0 {
		t.Errorf("isLocal allocates %v times per query", n)
	}
	if n := testing.AllocsPerRun(100, func() { a.Check(netip.MustParseAddrPort("10.7.1.5:443")) }); n != 0 {
		t.Errorf("Check of an allowed address allocates %v times", n)
	}
}
