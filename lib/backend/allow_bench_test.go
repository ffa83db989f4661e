package backend

import (
	"net/netip"
	"testing"
)

// BenchmarkAllowListCheck is the cost of the check on every address
// dialled, with a wildcard listener on port 443: for a backend on
// another port (no route check), and for one on port 443 that is not
// this machine (the kernel is asked).
func BenchmarkAllowListCheck(b *testing.B) {
	a, err := ParseAllowList([]string{"2001:db8::/32", "192.0.2.0/24", "10.0.0.0/8"})
	if err != nil {
		b.Fatal(err)
	}
	a.Deny(netip.MustParseAddrPort("0.0.0.0:443"))
	for _, bc := range []struct{ name, to string }{
		{"other-port", "10.7.0.5:8443"},
		{"wildcard-port", "10.7.0.5:443"},
	} {
		to := netip.MustParseAddrPort(bc.to)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := a.Check(to); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
