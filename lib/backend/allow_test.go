package backend

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/snitools/snitools/lib/nat46"
)

// The outcomes of AllowList.Check a table case expects.
const (
	allowed    = iota
	notAllowed // ErrNotAllowed: this proxy does not serve the address
	unknown    // ErrRefused without ErrNotAllowed: the kernel could not be asked
)

// kernelUnavailable makes a's route questions fail without asking the
// kernel, so that a case on a wildcard listener's port does not depend on
// this machine's routes: a check that reaches the route question is
// refused as unknown, one that does not is decided by the list alone.
// What the kernel answers is TestLocalRoutes' job, in a namespace whose
// routes it sets up.
func kernelUnavailable(a *AllowList) {
	a.local.open = true
	a.local.err = errors.New("route netlink socket: stubbed out by the test")
}

// TestAllowListCheck is the table of what keeps snilisten from being an
// open proxy: which destinations Check lets through and which it refuses,
// and with which error, for IPv4 and IPv6 networks, IPv4-mapped addresses,
// the nat46 prefix, the addresses no sane -backend-cidr holds, and the
// proxy's own listening addresses and ports. It needs neither root nor a
// network namespace: no case asks the kernel (see kernelUnavailable).
func TestAllowListCheck(t *testing.T) {
	// The nat46 prefix is where nat46 mode's sources are; a name that
	// resolves into it must not be dialled (it is routed locally).
	prefix, err := nat46.ParsePrefix("64:ff9b:1::/96")
	if err != nil {
		t.Fatal(err)
	}
	inNAT46, err := prefix.Embed(netip.MustParseAddr("192.0.2.7"))
	if err != nil {
		t.Fatal(err)
	}

	type tc struct {
		to   string
		want int
		why  string // a substring of the error: the reason, with the input
	}
	for _, list := range []struct {
		name  string
		cidrs []string
		deny  []string
		cases []tc
	}{{
		name:  "empty list refuses everything",
		cidrs: nil,
		cases: []tc{
			{"192.0.2.5:443", notAllowed, "192.0.2.5 is outside every -backend-cidr"},
			{"[2001:db8::5]:443", notAllowed, "2001:db8::5 is outside every -backend-cidr"},
		},
	}, {
		name:  "IPv4 and IPv6 networks",
		cidrs: []string{"192.0.2.0/24", "2001:db8:5ba7::/80", "10.0.0.0/8"},
		cases: []tc{
			{"192.0.2.5:443", allowed, ""},
			{"192.0.2.255:8443", allowed, ""},
			{"10.255.255.254:443", allowed, ""},
			{"192.0.3.1:443", notAllowed, "192.0.3.1 is outside"},
			{"198.51.100.5:443", notAllowed, "198.51.100.5 is outside"},
			{"[2001:db8:5ba7::1]:443", allowed, ""},
			{"[2001:db8:5ba7::ffff:ffff:ffff]:443", allowed, ""},                        // the /80's last
			{"[2001:db8:5ba7:0:1::]:443", notAllowed, "2001:db8:5ba7:0:1:: is outside"}, // just past it
			{"[2001:db8:5ba7:1::1]:443", notAllowed, "2001:db8:5ba7:1::1 is outside"},
			{"[2001:db8::1]:443", notAllowed, "2001:db8::1 is outside"},
			// IPv4-mapped addresses are the IPv4 address they map,
			// both ways: in an IPv4 network, never smuggled past it.
			{"[::ffff:192.0.2.5]:443", allowed, ""},
			{"[::ffff:198.51.100.5]:443", notAllowed, "198.51.100.5 is outside"},
			{"[::ffff:127.0.0.1]:443", notAllowed, "127.0.0.1 is outside"},
			// nat46 mode's own prefix: outside the CIDRs, refused.
			{netip.AddrPortFrom(inNAT46, 443).String(), notAllowed, inNAT46.String() + " is outside"},
			// Addresses no -backend-cidr above holds: unspecified,
			// loopback, link-local, the cloud metadata address,
			// private and shared ranges, unique-local.
			{"0.0.0.0:443", notAllowed, "0.0.0.0 is outside"},
			{"[::]:443", notAllowed, ":: is outside"},
			{"127.0.0.1:443", notAllowed, "127.0.0.1 is outside"},
			{"127.0.0.2:8080", notAllowed, "127.0.0.2 is outside"},
			{"[::1]:443", notAllowed, "::1 is outside"},
			{"169.254.169.254:80", notAllowed, "169.254.169.254 is outside"},
			{"[fe80::1]:443", notAllowed, "fe80::1 is outside"},
			{"[fe80::1%eth0]:443", notAllowed, "fe80::1%eth0 is outside"},
			{"172.16.0.1:443", notAllowed, "172.16.0.1 is outside"},
			{"192.168.1.1:443", notAllowed, "192.168.1.1 is outside"},
			{"100.64.0.1:443", notAllowed, "100.64.0.1 is outside"},
			{"[fd00::1]:443", notAllowed, "fd00::1 is outside"},
			{"255.255.255.255:443", notAllowed, "255.255.255.255 is outside"},
		},
	}, {
		name:  "a network written as IPv4-mapped holds nothing",
		cidrs: []string{"::ffff:192.0.2.0/120"},
		// Addresses are unmapped before the check, so they are IPv4
		// and no IPv6 network holds them: fail closed.
		cases: []tc{
			{"192.0.2.5:443", notAllowed, "192.0.2.5 is outside"},
			{"[::ffff:192.0.2.5]:443", notAllowed, "192.0.2.5 is outside"},
		},
	}, {
		name:  "the nat46 prefix inside a CIDR is the operator's to allow",
		cidrs: []string{"64:ff9b:1::/96"},
		// Only the kernel's route (RTN_LOCAL, on a wildcard
		// listener's port) refuses it then; on any other port it is
		// an ordinary backend address.
		cases: []tc{
			{netip.AddrPortFrom(inNAT46, 8443).String(), allowed, ""},
		},
	}, {
		name:  "a link-local network does not hold zoned addresses",
		cidrs: []string{"fe80::/10"},
		cases: []tc{
			{"[fe80::1]:443", allowed, ""},
			{"[fe80::1%eth0]:443", notAllowed, "fe80::1%eth0 is outside"},
		},
	}, {
		name:  "the list is the operator's: no hidden exceptions",
		cidrs: []string{"0.0.0.0/0", "::/0"},
		// Nothing is refused for what it is, only for where it is:
		// an operator who allows everything gets everything (the man
		// page asks for the backends' networks).
		cases: []tc{
			{"169.254.169.254:80", allowed, ""},
			{"127.0.0.1:8080", allowed, ""},
			{"[::1]:8080", allowed, ""},
			{"0.0.0.0:8080", allowed, ""},
		},
	}, {
		name:  "the proxy's own exact listening addresses",
		cidrs: []string{"192.0.2.0/24", "2001:db8:5ba7::/80"},
		deny:  []string{"192.0.2.1:443", "[::ffff:192.0.2.2]:443", "[2001:db8:5ba7::1]:443"},
		cases: []tc{
			{"192.0.2.1:443", notAllowed, "192.0.2.1:443 is this proxy's own listening address"},
			{"[::ffff:192.0.2.1]:443", notAllowed, "is this proxy's own listening address"},
			{"192.0.2.2:443", notAllowed, "192.0.2.2:443 is this proxy's own listening address"}, // denied as mapped
			{"[2001:db8:5ba7::1]:443", notAllowed, "[2001:db8:5ba7::1]:443 is this proxy's own listening address"},
			// The same address on another port is a backend, as is
			// another address on the same port.
			{"192.0.2.1:8443", allowed, ""},
			{"192.0.2.3:443", allowed, ""},
			{"[2001:db8:5ba7::1]:8443", allowed, ""},
			{"[2001:db8:5ba7::2]:443", allowed, ""},
		},
	}, {
		name:  "an IPv4 wildcard listener",
		cidrs: []string{"192.0.2.0/24", "2001:db8:5ba7::/80", "127.0.0.0/8"},
		deny:  []string{"0.0.0.0:443"},
		cases: []tc{
			// On its port, an allowed IPv4 address may be this
			// machine: the kernel is asked, and an unknown answer
			// refuses (fail closed).
			{"192.0.2.5:443", unknown, "cannot tell whether 192.0.2.5:443 is this machine"},
			{"127.0.0.1:443", unknown, "cannot tell whether 127.0.0.1:443 is this machine"},
			{"[::ffff:192.0.2.5]:443", unknown, "is this machine"},
			// Outside the CIDRs: refused before the kernel is asked.
			{"198.51.100.5:443", notAllowed, "198.51.100.5 is outside"},
			// 0.0.0.0 takes no IPv6: the kernel is not asked.
			{"[2001:db8:5ba7::5]:443", allowed, ""},
			// Another port: a backend on this machine (loopback
			// included) is the operator's to allow.
			{"192.0.2.5:8443", allowed, ""},
			{"127.0.0.1:8080", allowed, ""},
		},
	}, {
		name:  "an IPv6 wildcard listener takes both families",
		cidrs: []string{"192.0.2.0/24", "2001:db8:5ba7::/80"},
		deny:  []string{"[::]:443"},
		cases: []tc{
			{"[2001:db8:5ba7::5]:443", unknown, "cannot tell whether [2001:db8:5ba7::5]:443 is this machine"},
			{"192.0.2.5:443", unknown, "cannot tell whether 192.0.2.5:443 is this machine"},
			{"[2001:db8:5ba7::5]:8443", allowed, ""},
			{"192.0.2.5:8443", allowed, ""},
			{"[2001:db8::5]:443", notAllowed, "2001:db8::5 is outside"},
		},
	}} {
		t.Run(list.name, func(t *testing.T) {
			a, err := ParseAllowList(list.cidrs)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range list.deny {
				a.Deny(netip.MustParseAddrPort(d))
			}
			kernelUnavailable(a)
			for _, c := range list.cases {
				to := netip.MustParseAddrPort(c.to)
				for _, via := range []string{"Check", "Control"} {
					var err error
					if via == "Check" {
						err = a.Check(to)
					} else {
						// What a net.Dialer hands Control: the
						// address as dialled, after resolution.
						err = a.Control("tcp", c.to, nil)
					}
					got := allowed
					switch {
					case errors.Is(err, ErrNotAllowed):
						got = notAllowed
					case errors.Is(err, ErrRefused):
						got = unknown
					case err != nil:
						got = -1
					}
					if got != c.want || err != nil && !strings.Contains(err.Error(), c.why) {
						t.Errorf("%s(%s) with %q, deny %q = %v; want %s with %q",
							via, c.to, list.cidrs, list.deny, err, outcomeName(c.want), c.why)
					}
				}
			}
		})
	}
}

func outcomeName(o int) string {
	switch o {
	case allowed:
		return "allowed"
	case notAllowed:
		return "ErrNotAllowed"
	case unknown:
		return "ErrRefused (not ErrNotAllowed)"
	}
	return "?"
}

// TestAllowListControlUnparsable: an address Control cannot parse is
// refused, not let through, and not mistaken for "not allowed".
func TestAllowListControlUnparsable(t *testing.T) {
	a, err := ParseAllowList([]string{"0.0.0.0/0", "::/0"})
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"", "example.com:443", "192.0.2.5", "[::1]", "192.0.2.5:https"} {
		err := a.Control("tcp", addr, nil)
		if !errors.Is(err, ErrRefused) || errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "cannot parse dial address") {
			t.Errorf("Control(%q) = %v; want ErrRefused, cannot parse", addr, err)
		}
	}
}

// TestAllowListParse: what -backend-cidr accepts, and that a mistake is
// an error naming the input rather than a wider or narrower network.
func TestAllowListParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // String() of the list, or "" for an error
		why  string
	}{
		{"192.0.2.0/24", "192.0.2.0/24", ""},
		{" 2001:db8:5ba7::/80 ", "2001:db8:5ba7::/80", ""},
		{"192.0.2.1/32", "192.0.2.1/32", ""},
		{"::/0", "::/0", ""},
		{"192.0.2.1/24", "", `backend CIDR "192.0.2.1/24": host bits set (did you mean 192.0.2.0/24?)`},
		{"2001:db8:5ba7::1/80", "", "did you mean 2001:db8:5ba7::/80?"},
		{"192.0.2.0", "", `backend CIDR "192.0.2.0"`},
		{"192.0.2.0/33", "", `backend CIDR "192.0.2.0/33"`},
		{"example.com/24", "", `backend CIDR "example.com/24"`},
		{"", "", `backend CIDR ""`},
	} {
		a, err := ParseAllowList([]string{c.in})
		switch {
		case c.want == "" && (err == nil || !strings.Contains(err.Error(), c.why)):
			t.Errorf("ParseAllowList(%q) = %v, %v; want an error with %q", c.in, a, err, c.why)
		case c.want != "" && (err != nil || a.String() != c.want):
			t.Errorf("ParseAllowList(%q) = %v, %v; want %s", c.in, a, err, c.want)
		}
		// The flag (Set) takes what ParseAllowList takes.
		var f AllowList
		if err := f.Set(c.in); (err == nil) != (c.want != "") {
			t.Errorf("Set(%q) = %v; want an error: %v", c.in, err, c.want == "")
		}
	}
	// Repeated flags add up; an empty list is Empty.
	var f AllowList
	if !f.Empty() || f.String() != "" {
		t.Errorf("zero AllowList: Empty %v, String %q", f.Empty(), f.String())
	}
	for _, c := range []string{"192.0.2.0/24", "2001:db8:5ba7::/80"} {
		if err := f.Set(c); err != nil {
			t.Fatal(err)
		}
	}
	if f.Empty() || f.String() != "192.0.2.0/24,2001:db8:5ba7::/80" {
		t.Errorf("after two Set: Empty %v, String %q", f.Empty(), f.String())
	}
	if err := f.Check(netip.MustParseAddrPort("[2001:db8:5ba7::9]:443")); err != nil {
		t.Errorf("after two Set, the second network is refused: %v", err)
	}
}
